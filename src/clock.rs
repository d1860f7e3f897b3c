//! The only place that reads the wall clock.
//!
//! Every check that depends on time (key validity, policy expiry, claim deadlines) takes the
//! instant as an argument, so it can be tested with a fixed time and so one task is judged at one
//! time throughout (TUF's "fixed update start time"). `clippy.toml` bans `SystemTime::now`
//! everywhere else.

use chrono::{DateTime, Utc};

/// The current UTC time. Call once per decision and pass the value down.
#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A duration for people: `5 min`, `3 h 2 min`, `1 d 4 h`, `45 s`, `250 ms`, `0 s`; negative
/// durations get a leading `-`. Every non-zero unit from days down to seconds is shown
/// (sub-second parts only when the whole duration is under a second).
pub fn human_duration(d: chrono::Duration) -> String {
    let sign = if d < chrono::Duration::zero() {
        "-"
    } else {
        ""
    };
    let d = d.abs();
    let total = d.num_seconds();
    if total == 0 {
        let ms = d.num_milliseconds();
        return if ms == 0 {
            "0 s".to_owned()
        } else {
            format!("{sign}{ms} ms")
        };
    }
    let parts: Vec<String> = [
        (total / 86_400, "d"),
        (total % 86_400 / 3_600, "h"),
        (total % 3_600 / 60, "min"),
        (total % 60, "s"),
    ]
    .into_iter()
    .filter(|(n, _)| *n != 0)
    .map(|(n, unit)| format!("{n} {unit}"))
    .collect();
    format!("{sign}{}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use chrono::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::minutes(5)), "5 min");
        assert_eq!(
            human_duration(Duration::hours(3) + Duration::minutes(2)),
            "3 h 2 min"
        );
        assert_eq!(human_duration(Duration::seconds(45)), "45 s");
        assert_eq!(
            human_duration(Duration::days(1) + Duration::hours(4)),
            "1 d 4 h"
        );
        assert_eq!(
            human_duration(Duration::hours(1) + Duration::seconds(1)),
            "1 h 1 s"
        );
        assert_eq!(human_duration(Duration::milliseconds(250)), "250 ms");
        assert_eq!(human_duration(Duration::zero()), "0 s");
        assert_eq!(human_duration(-Duration::minutes(30)), "-30 min");
    }
}
