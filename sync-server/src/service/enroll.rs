//! Which enrollment codes still work, and when a new code expires.

use tejido_core::sync::wire::Role;

use super::limits::COORDINATOR_CODE_EXPIRY_MS;
use crate::storage::{Result, StorageError};

/// An enrollment code as storage holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeState {
    pub uses_left: i64,
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
}

/// What storage knows of the replica that wants to enroll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// An unrevoked device holds this replica.
    pub active: bool,
    /// The latest revocation of a device that held it.
    pub revoked_ms: Option<i64>,
}

/// Whether a code may enroll this replica now. A spent code never works again (not even for
/// the replica that spent it), and a revoked replica cannot come back with a code made before
/// its revocation: both get the same answer as an unknown code.
pub fn check_code(code: Option<&CodeState>, replica: &ReplicaState, now_ms: i64) -> Result<()> {
    let Some(code) = code else { return Err(StorageError::BadCode) };
    if code.expires_ms.is_some_and(|e| e <= now_ms) || code.uses_left <= 0 {
        return Err(StorageError::BadCode);
    }
    if replica.revoked_ms.is_some_and(|r| r >= code.created_ms) {
        return Err(StorageError::BadCode);
    }
    if replica.active {
        return Err(StorageError::Conflict(
            "this replica is already enrolled; revoke that device first".into(),
        ));
    }
    Ok(())
}

/// How long a new code should live, as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The default for the role: a day for coordinator codes, none for the others.
    Default,
    Never,
    /// At this time (ms since the epoch).
    At(i64),
}

impl Expiry {
    /// Parses `never` or a duration like `7d` or `12h 30m`; `None` is the role's default.
    pub fn parse(s: Option<&str>, now_ms: i64) -> std::result::Result<Expiry, String> {
        let Some(s) = s.map(str::trim) else { return Ok(Expiry::Default) };
        if s.eq_ignore_ascii_case("never") {
            return Ok(Expiry::Never);
        }
        let d = humantime::parse_duration(s)
            .map_err(|_| format!("{s:?} is not a duration like 7d or 12h, nor never"))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| "that duration is too long".to_string())?;
        if ms == 0 {
            return Err("an expiry must be longer than zero".into());
        }
        Ok(Expiry::At(now_ms.saturating_add(ms)))
    }

    /// When a code for `role` made now expires.
    pub fn resolve(self, role: Role, now_ms: i64) -> Option<i64> {
        match self {
            Expiry::Default if role == Role::Coordinator => {
                Some(now_ms.saturating_add(COORDINATOR_CODE_EXPIRY_MS))
            }
            Expiry::Default | Expiry::Never => None,
            Expiry::At(t) => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_expired_and_pre_revocation_codes_are_bad() {
        let fresh = CodeState { uses_left: 1, expires_ms: None, created_ms: 100 };
        let none = ReplicaState::default();
        assert!(check_code(Some(&fresh), &none, 200).is_ok());
        assert!(matches!(check_code(None, &none, 200), Err(StorageError::BadCode)));
        let spent = CodeState { uses_left: 0, ..fresh.clone() };
        assert!(matches!(check_code(Some(&spent), &none, 200), Err(StorageError::BadCode)));
        let expired = CodeState { expires_ms: Some(150), ..fresh.clone() };
        assert!(matches!(check_code(Some(&expired), &none, 200), Err(StorageError::BadCode)));
        let revoked_after = ReplicaState { active: false, revoked_ms: Some(120) };
        assert!(matches!(check_code(Some(&fresh), &revoked_after, 200), Err(StorageError::BadCode)));
        let revoked_before = ReplicaState { active: false, revoked_ms: Some(90) };
        assert!(check_code(Some(&fresh), &revoked_before, 200).is_ok());
        let active = ReplicaState { active: true, revoked_ms: None };
        assert!(matches!(check_code(Some(&fresh), &active, 200), Err(StorageError::Conflict(_))));
    }

    #[test]
    fn coordinator_codes_expire_by_default() {
        assert_eq!(
            Expiry::parse(None, 0).unwrap().resolve(Role::Coordinator, 0),
            Some(COORDINATOR_CODE_EXPIRY_MS)
        );
        assert_eq!(Expiry::parse(None, 0).unwrap().resolve(Role::Enumerator, 0), None);
        assert_eq!(Expiry::parse(Some("never"), 0).unwrap().resolve(Role::Coordinator, 0), None);
        assert_eq!(
            Expiry::parse(Some("2h"), 10).unwrap().resolve(Role::Coordinator, 10),
            Some(10 + 7_200_000)
        );
        assert!(Expiry::parse(Some("soon"), 0).is_err());
    }
}
