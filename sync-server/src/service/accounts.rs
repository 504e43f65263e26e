//! The web app's accounts: users with argon2id password hashes, their memberships of projects,
//! sessions kept in the database (so every server process knows them), and failed logins
//! slowed down per account and per address. Every rule about them is here.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use uuid::Uuid;

use super::Service;
use crate::secrets::{hash_token, new_token};
use crate::storage::{Membership, Result, Session, StorageError, User, UserRole};

/// How long a session lasts from login.
pub const SESSION_MS: i64 = 12 * 60 * 60 * 1000;
pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MAX_EMAIL_BYTES: usize = 254;
/// Failed logins in a row an account gets before each next try must wait.
pub const FREE_FAILURES_PER_ACCOUNT: u32 = 5;
/// The same for one address (an office behind one NAT shares it).
pub const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// A failure count is forgotten this long after its last failure.
pub const FORGET_FAILURES_MS: i64 = 24 * 60 * 60 * 1000;
/// The longest wait between tries.
pub const MAX_WAIT_MS: i64 = 15 * 60 * 1000;

/// A user and the projects they belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user: User,
    pub memberships: Vec<Membership>,
}

impl Account {
    /// The user's role in a project, if they belong to it.
    pub fn role_in(&self, project: Uuid) -> Option<UserRole> {
        self.memberships.iter().find(|m| m.project == project).map(|m| m.role)
    }
}

/// What a login attempt gave.
pub enum Login {
    /// Signed in: the session's token (for the cookie; kept only as its hash) and session.
    Ok { token: String, session: Session },
    /// The email or password is wrong (which one is not said).
    Refused,
    /// Too many failures: try again after this long.
    Throttled { retry_after: Duration },
}

impl std::fmt::Debug for Login {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Ok { session, .. } => write!(f, "Login::Ok {{ user: {} }}", session.user),
            Login::Refused => f.write_str("Login::Refused"),
            Login::Throttled { retry_after } => {
                write!(f, "Login::Throttled {{ retry_after: {retry_after:?} }}")
            }
        }
    }
}

/// An email as the server keeps it: trimmed and lowercased, checked for shape.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= MAX_EMAIL_BYTES
        && email.split_once('@').is_some_and(|(a, d)| !a.is_empty() && !d.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email)
    } else {
        Err(StorageError::Invalid("that is not an email address".into()))
    }
}

pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(StorageError::Invalid(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters (and at most {MAX_PASSWORD_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// Hashes on a blocking thread: argon2 is slow on purpose.
async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| StorageError::Other(format!("cannot hash a password: {e}")))
    })
    .await
    .map_err(|e| StorageError::Other(format!("the hashing task failed: {e}")))?
}

async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A hash of no one's password, verified against when the email is unknown, so that a wrong
/// email takes as long as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$E5pBHGXsf6cOB6XCZ+t6yo/T2zXUwT3CFPNP7MH1TKU";

/// How long to wait before the next try after `failures` in a row, past `free` of them.
pub fn wait_ms(failures: u32, free: u32) -> i64 {
    if failures < free {
        return 0;
    }
    let doublings = (failures - free).min(20);
    (1000_i64 << doublings).min(MAX_WAIT_MS)
}

fn throttle_keys(email: &str, addr: &str) -> [(String, u32); 2] {
    [
        (format!("email:{email}"), FREE_FAILURES_PER_ACCOUNT),
        (format!("addr:{addr}"), FREE_FAILURES_PER_ADDRESS),
    ]
}

impl Service {
    /// Adds a user to a project with a role: a new user needs a password; an existing one keeps
    /// theirs (and a given password is refused, so that nobody resets one by accident).
    pub async fn add_user(
        &self,
        email: &str,
        password: Option<&str>,
        project: Uuid,
        role: UserRole,
        now_ms: i64,
    ) -> Result<(User, bool)> {
        let email = normalize_email(email)?;
        let hash = match password {
            Some(p) => {
                check_password(p)?;
                Some(hash_password(p).await?)
            }
            None => None,
        };
        let mut tx = self.write().await?;
        if tx.project(project).await?.is_none() {
            return Err(StorageError::NotFound(format!("project {project}")));
        }
        let (user, created) = match tx.user_by_email(&email).await? {
            Some(_) if hash.is_some() => {
                return Err(StorageError::Conflict(format!(
                    "{email} has an account already; use `user passwd` to change the password"
                )))
            }
            Some(u) => (u, false),
            None => {
                let Some(password_hash) = hash else {
                    return Err(StorageError::Invalid(format!("{email} is a new user and needs a password")));
                };
                let user = User { id: Uuid::new_v4(), email, password_hash, created_ms: now_ms };
                tx.insert_user(&user).await?;
                (user, true)
            }
        };
        tx.put_membership(user.id, &Membership { project, role }).await?;
        tx.commit().await?;
        Ok((user, created))
    }

    /// Every user with their memberships.
    pub async fn list_users(&self) -> Result<Vec<Account>> {
        let mut tx = self.read().await?;
        let mut out = Vec::new();
        for user in tx.users().await? {
            let memberships = tx.memberships(user.id).await?;
            out.push(Account { user, memberships });
        }
        Ok(out)
    }

    /// Removes a user, their memberships and sessions (at once: their cookies stop working).
    pub async fn remove_user(&self, email: &str) -> Result<bool> {
        let email = normalize_email(email)?;
        let mut tx = self.write().await?;
        let Some(user) = tx.user_by_email(&email).await? else { return Ok(false) };
        let removed = tx.delete_user(user.id).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Sets a user's password and ends every session they have.
    pub async fn set_password(&self, email: &str, password: &str) -> Result<()> {
        let email = normalize_email(email)?;
        check_password(password)?;
        let hash = hash_password(password).await?;
        let mut tx = self.write().await?;
        let Some(user) = tx.user_by_email(&email).await? else {
            return Err(StorageError::NotFound(format!("user {email}")));
        };
        tx.set_password_hash(user.id, &hash).await?;
        tx.delete_user_sessions(user.id).await?;
        tx.clear_login_failures(&format!("email:{email}")).await?;
        tx.commit().await
    }

    /// Checks an email and password from `addr`; failures in a row make every next try (right
    /// or wrong) wait, per account and per address.
    pub async fn login(&self, email: &str, password: &str, addr: &str, now_ms: i64) -> Result<Login> {
        let Ok(email) = normalize_email(email) else { return Ok(Login::Refused) };
        let keys = throttle_keys(&email, addr);
        let mut tx = self.read().await?;
        let mut wait = 0_i64;
        for (key, free) in &keys {
            if let Some((failures, last)) = tx.login_failures(key).await? {
                let until = last.saturating_add(wait_ms(failures, *free));
                wait = wait.max(until.saturating_sub(now_ms));
            }
        }
        if wait > 0 {
            return Ok(Login::Throttled { retry_after: Duration::from_millis(wait as u64) });
        }
        let user = tx.user_by_email(&email).await?;
        drop(tx);
        let password = if password.len() > MAX_PASSWORD_BYTES { "" } else { password };
        let hash = user.as_ref().map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let good = verify_password(password, hash).await && user.is_some();
        let mut tx = self.write().await?;
        let outcome = match user.filter(|_| good) {
            Some(user) => {
                for (key, _) in &keys {
                    tx.clear_login_failures(key).await?;
                }
                let token = new_token();
                let session = Session {
                    token_hash: hash_token(&token),
                    user: user.id,
                    csrf: new_token(),
                    created_ms: now_ms,
                    expires_ms: now_ms.saturating_add(SESSION_MS),
                };
                tx.insert_session(&session).await?;
                tx.delete_expired_sessions(now_ms).await?;
                Login::Ok { token, session }
            }
            None => {
                // Counts idle for a day are forgotten, so made-up emails cannot grow the table
                // without bound.
                tx.forget_login_failures(now_ms.saturating_sub(FORGET_FAILURES_MS)).await?;
                for (key, _) in &keys {
                    let failures = tx.login_failures(key).await?.map_or(0, |(n, _)| n);
                    tx.set_login_failures(key, failures.saturating_add(1), now_ms).await?;
                }
                Login::Refused
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The session and account of a session token, if it is current.
    pub async fn session(&self, token: &str, now_ms: i64) -> Result<Option<(Session, Account)>> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let mut tx = self.read().await?;
        let Some(session) = tx.session(&hash_token(token)).await? else { return Ok(None) };
        if session.expires_ms <= now_ms {
            return Ok(None);
        }
        let Some(user) = tx.user(session.user).await? else { return Ok(None) };
        let memberships = tx.memberships(user.id).await?;
        Ok(Some((session, Account { user, memberships })))
    }

    /// Ends a session: its cookie stops working at once, in every server process.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let mut tx = self.write().await?;
        tx.delete_session(&hash_token(token)).await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_a_bound() {
        assert_eq!(wait_ms(4, 5), 0);
        assert_eq!(wait_ms(5, 5), 1000);
        assert_eq!(wait_ms(6, 5), 2000);
        assert_eq!(wait_ms(40, 5), MAX_WAIT_MS);
        assert_eq!(wait_ms(u32::MAX, 5), MAX_WAIT_MS);
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2_hash() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("  Ana@Example.ORG ").ok().as_deref(), Some("ana@example.org"));
        assert!(normalize_email("ana").is_err());
        assert!(normalize_email("a b@c").is_err());
    }
}
