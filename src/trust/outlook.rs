//! What will break, and when: the earliest end of each key's usefulness.
//!
//! Why this module exists: a key stops producing signatures that verify for several unrelated
//! reasons (the policy window ends, a scheduled retirement, the policy itself expires, the
//! OpenPGP certificate's own expiry, a hard revocation), and an operator watching a worker for
//! years needs the first of them, not a table to reconcile by hand. `chainlock keys status`
//! and `keys list` render these verdicts.
//!
//! What it must not do: IO or reading the clock. The certificate's own lifetime comes from
//! [`crate::openpgp::signing_lifetime`]; times are arguments.

use super::policy::{RevocationReason, WorkerKey};
use crate::openpgp::CertLifetime;
use chrono::{DateTime, Duration, Utc};

/// How urgent a verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Nothing breaks within the horizon.
    Fine,
    /// Something breaks within the horizon.
    Soon,
    /// Already broken.
    Broken,
}

impl Urgency {
    /// The column label: `ok`, `WARN`, `BROKEN`.
    pub fn label(self) -> &'static str {
        match self {
            Urgency::Fine => "ok",
            Urgency::Soon => "WARN",
            Urgency::Broken => "BROKEN",
        }
    }
}

/// Why a key stops (or stopped) producing signatures that verify.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The trust policy version in force expires.
    PolicyExpires {
        /// Its version.
        version: u64,
    },
    /// The key's policy window (`valid_until`) ends.
    WindowEnds,
    /// A soft revocation (`retired`, `superseded`) takes effect.
    Retired {
        /// The reason.
        reason: RevocationReason,
    },
    /// Revoked as compromised: every signature it ever made is refused.
    Compromised,
    /// The OpenPGP certificate's own expiry (`what`: primary key or signing subkeys).
    CertExpires {
        /// Which part expires.
        what: &'static str,
    },
    /// The OpenPGP certificate cannot sign for another reason (revoked, no valid
    /// self-signature, no signing-capable key).
    CertUnusable {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::PolicyExpires { version } => write!(f, "trust policy version {version} expiry"),
            Cause::WindowEnds => f.write_str("policy window end"),
            Cause::Retired { reason } => write!(f, "revocation ({})", reason.as_str()),
            Cause::Compromised => f.write_str("revocation (compromised)"),
            Cause::CertExpires { what } => write!(f, "certificate expiry ({what})"),
            Cause::CertUnusable { reason } => write!(f, "certificate unusable ({reason})"),
        }
    }
}

/// The first thing that ends a key's usefulness, and how urgent it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    /// When (for an unusable certificate or a compromise: the evaluation time or the
    /// revocation's time).
    pub at: DateTime<Utc>,
    /// What.
    pub cause: Cause,
    /// Broken already, within the horizon, or later.
    pub urgency: Urgency,
    /// When the key's window has not started yet: its start.
    pub not_before: Option<DateTime<Utc>>,
}

fn urgency(at: DateTime<Utc>, now: DateTime<Utc>, horizon: Duration) -> Urgency {
    if at <= now {
        Urgency::Broken
    } else if now.checked_add_signed(horizon).is_none_or(|h| at <= h) {
        Urgency::Soon
    } else {
        Urgency::Fine
    }
}

/// Judges a worker key at `now`: the earliest of the policy's expiry, the key's window end, a
/// soft revocation and (for OpenPGP keys) the certificate's own end; a hard revocation or an
/// unusable certificate is broken outright. `cert` is `None` for ed25519 keys, which carry no
/// expiry of their own.
pub fn worker_key(
    key: &WorkerKey,
    cert: Option<&CertLifetime>,
    policy: (u64, DateTime<Utc>),
    now: DateTime<Utc>,
    horizon: Duration,
) -> Outlook {
    let not_before = (now < key.valid_from).then_some(key.valid_from);
    let broken = |at, cause| Outlook {
        at,
        cause,
        urgency: Urgency::Broken,
        not_before,
    };
    if let Some(rev) = key.revocation.filter(|r| r.reason.is_hard()) {
        return broken(rev.at, Cause::Compromised);
    }
    let mut ends = vec![
        (policy.1, Cause::PolicyExpires { version: policy.0 }),
        (key.valid_until, Cause::WindowEnds),
    ];
    if let Some(rev) = key.revocation {
        ends.push((rev.at, Cause::Retired { reason: rev.reason }));
    }
    match cert {
        None | Some(CertLifetime::Alive { until: None }) => {}
        Some(CertLifetime::Alive { until: Some(t) }) => {
            ends.push((*t, Cause::CertExpires { what: "key" }));
        }
        Some(CertLifetime::Expired { since, what }) => {
            ends.push((*since, Cause::CertExpires { what }));
        }
        Some(CertLifetime::Unusable { reason }) => {
            return broken(
                now,
                Cause::CertUnusable {
                    reason: reason.clone(),
                },
            );
        }
    }
    // `ends` is never empty; the fallback keeps this total without an unwrap.
    let (at, cause) = ends
        .into_iter()
        .min_by_key(|(at, _)| *at)
        .unwrap_or((now, Cause::WindowEnds));
    Outlook {
        urgency: urgency(at, now, horizon),
        at,
        cause,
        not_before,
    }
}

/// When a key stops producing signatures that verify, for the expiry gauges: the earlier of
/// its window end and its certificate's own end (an unusable certificate: `now`). Revocations
/// are not counted here: the gauges leave revoked keys out.
pub fn key_end(key: &WorkerKey, cert: Option<&CertLifetime>, now: DateTime<Utc>) -> DateTime<Utc> {
    match cert {
        None | Some(CertLifetime::Alive { until: None }) => key.valid_until,
        Some(CertLifetime::Alive { until: Some(t) }) => key.valid_until.min(*t),
        Some(CertLifetime::Expired { since, .. }) => key.valid_until.min(*since),
        Some(CertLifetime::Unusable { .. }) => now.min(key.valid_until),
    }
}

/// Judges an OpenPGP certificate on its own (root keys, which have no policy window): `None`
/// when it can sign and never expires.
pub fn certificate(cert: &CertLifetime, now: DateTime<Utc>, horizon: Duration) -> Option<Outlook> {
    let (at, cause) = match cert {
        CertLifetime::Alive { until: None } => return None,
        CertLifetime::Alive { until: Some(t) } => (*t, Cause::CertExpires { what: "key" }),
        CertLifetime::Expired { since, what } => (*since, Cause::CertExpires { what }),
        CertLifetime::Unusable { reason } => (
            now,
            Cause::CertUnusable {
                reason: reason.clone(),
            },
        ),
    };
    Some(Outlook {
        at,
        cause,
        urgency: urgency(at, now, horizon),
        not_before: None,
    })
}

/// Judges the policy itself: its expiry.
pub fn policy(
    version: u64,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
    horizon: Duration,
) -> Outlook {
    Outlook {
        at: expires,
        cause: Cause::PolicyExpires { version },
        urgency: urgency(expires, now, horizon),
        not_before: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::{KeyType, Revocation};

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("in range") + Duration::days(days)
    }

    fn key(from: i64, until: i64, revocation: Option<Revocation>) -> WorkerKey {
        WorkerKey {
            name: "k".into(),
            key_type: KeyType::Openpgp,
            fingerprint: Some("F".into()),
            cert: None,
            public_key: None,
            valid_from: t(from),
            valid_until: t(until),
            revocation,
        }
    }

    /// One row per rule: the earliest end wins; within the horizon is `Soon`, past is `Broken`.
    #[test]
    fn earliest_end_and_urgency() {
        let retired = Some(Revocation {
            at: t(5),
            reason: RevocationReason::Retired,
        });
        let compromised = Some(Revocation {
            at: t(-100),
            reason: RevocationReason::Compromised,
        });
        let alive = |d| CertLifetime::Alive { until: Some(t(d)) };
        let never = CertLifetime::Alive { until: None };
        let (in10, in100) = (alive(10), alive(100));
        let expired = CertLifetime::Expired {
            since: t(-2),
            what: "primary key",
        };
        let unusable = CertLifetime::Unusable {
            reason: "revoked".into(),
        };
        #[rustfmt::skip]
        let rows: Vec<(WorkerKey, Option<&CertLifetime>, i64, Cause, Urgency)> = vec![
            (key(-10, 300, None), Some(&never), 300, Cause::WindowEnds, Urgency::Fine),
            (key(-10, 300, None), None, 300, Cause::WindowEnds, Urgency::Fine),
            (key(-10, 20, None), Some(&never), 20, Cause::WindowEnds, Urgency::Soon),
            (key(-10, -1, None), Some(&never), -1, Cause::WindowEnds, Urgency::Broken),
            (key(-10, 300, None), Some(&in10), 10, Cause::CertExpires { what: "key" }, Urgency::Soon),
            (key(-10, 300, None), Some(&in100), 100, Cause::CertExpires { what: "key" }, Urgency::Fine),
            (key(-10, 300, None), Some(&expired), -2, Cause::CertExpires { what: "primary key" }, Urgency::Broken),
            (key(-10, 300, retired), Some(&in100), 5, Cause::Retired { reason: RevocationReason::Retired }, Urgency::Soon),
            (key(-10, 300, compromised), Some(&never), -100, Cause::Compromised, Urgency::Broken),
            (key(-10, 900, None), Some(&never), 400, Cause::PolicyExpires { version: 3 }, Urgency::Fine),
        ];
        for (i, (k, cert, at, cause, urgency)) in rows.into_iter().enumerate() {
            let o = worker_key(&k, cert, (3, t(400)), t(0), Duration::days(30));
            assert_eq!(
                (o.at, o.cause, o.urgency),
                (t(at), cause, urgency),
                "row {i}"
            );
        }
        let o = worker_key(
            &key(-10, 300, None),
            Some(&unusable),
            (3, t(400)),
            t(0),
            Duration::days(30),
        );
        assert_eq!(o.urgency, Urgency::Broken);
        assert!(matches!(o.cause, Cause::CertUnusable { .. }), "{o:?}");
        let o = worker_key(
            &key(3, 300, None),
            None,
            (3, t(400)),
            t(0),
            Duration::days(30),
        );
        assert_eq!(o.not_before, Some(t(3)));
        assert_eq!(
            policy(3, t(10), t(0), Duration::days(30)).urgency,
            Urgency::Soon
        );
        assert_eq!(
            policy(3, t(0), t(0), Duration::days(30)).urgency,
            Urgency::Broken
        );
        let h = Duration::days(30);
        let k = key(-10, 300, None);
        assert_eq!(key_end(&k, None, t(0)), t(300));
        assert_eq!(key_end(&k, Some(&never), t(0)), t(300));
        assert_eq!(key_end(&k, Some(&in10), t(0)), t(10));
        assert_eq!(key_end(&key(-10, 5, None), Some(&in10), t(0)), t(5));
        assert_eq!(key_end(&k, Some(&expired), t(0)), t(-2));
        assert_eq!(key_end(&k, Some(&unusable), t(0)), t(0));
        assert_eq!(certificate(&never, t(0), h), None);
        assert_eq!(
            certificate(&alive(10), t(0), h).map(|o| o.urgency),
            Some(Urgency::Soon)
        );
        assert_eq!(
            certificate(&alive(100), t(0), h).map(|o| o.urgency),
            Some(Urgency::Fine)
        );
        assert_eq!(
            certificate(&expired, t(0), h).map(|o| o.urgency),
            Some(Urgency::Broken)
        );
    }
}
