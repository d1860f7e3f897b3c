//! The `chainlock` binary: parse arguments, run, map the result to an exit code.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The budgeted json-e child (chainlock::jsone): before anything else starts.
    if argv
        .get(1)
        .is_some_and(|a| a == chainlock::jsone::CHILD_ARG)
    {
        std::process::exit(chainlock::jsone::child_main(&argv));
    }
    let cli = match chainlock::cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(err) => std::process::exit(chainlock::cli::handle_parse_error(&err, &argv)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chainlock: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(chainlock::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("chainlock: {err:#}");
            if err.downcast_ref::<chainlock::exit::UsageError>().is_some() {
                chainlock::exit::EX_USAGE
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}
