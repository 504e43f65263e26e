//! What the enumerator sets on the device for forms' `username`, `email` and `phonenumber`
//! metadata, as ODK Collect's "form metadata" settings hold them. Kept in the store (local, never
//! synced as such; a form that asks for one records it in the submission, which syncs).

use super::{Result, Store, StoreError};

/// The longest value a device metadata setting takes, in characters (an email address's limit).
pub const MAX_DEVICE_METADATA_CHARS: usize = 254;

/// A device metadata setting, filled into the form questions of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceMetadata {
    Username,
    Email,
    PhoneNumber,
}

impl DeviceMetadata {
    pub const ALL: [DeviceMetadata; 3] =
        [DeviceMetadata::Username, DeviceMetadata::Email, DeviceMetadata::PhoneNumber];

    /// The XLSForm type name (`username`, `email`, `phonenumber`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceMetadata::Username => "username",
            DeviceMetadata::Email => "email",
            DeviceMetadata::PhoneNumber => "phonenumber",
        }
    }

    pub fn parse(name: &str) -> Option<DeviceMetadata> {
        DeviceMetadata::ALL.into_iter().find(|m| m.as_str() == name)
    }

    fn key(self) -> String {
        format!("device_metadata/{}", self.as_str())
    }
}

impl Store {
    /// Sets (or, with `None` or only spaces, clears) a device metadata value. Forms opened after
    /// this record it in new drafts; drafts that already hold one keep theirs. A value is trimmed;
    /// one longer than [`MAX_DEVICE_METADATA_CHARS`] or holding a control character is refused
    /// and nothing changes.
    pub fn set_device_metadata(&self, kind: DeviceMetadata, value: Option<&str>) -> Result<()> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        if let Some(v) = value {
            if v.chars().count() > MAX_DEVICE_METADATA_CHARS {
                return Err(StoreError::InvalidSetting(format!(
                    "the {} is longer than {MAX_DEVICE_METADATA_CHARS} characters",
                    kind.as_str()
                )));
            }
            if v.chars().any(char::is_control) {
                return Err(StoreError::InvalidSetting(format!(
                    "the {} holds a control character",
                    kind.as_str()
                )));
            }
        }
        match value {
            Some(v) => self.set_sync_state(&kind.key(), v),
            None => {
                self.lock().conn.execute("DELETE FROM sync_state WHERE key = ?1", [kind.key()])?;
                Ok(())
            }
        }
    }

    /// The device metadata value set with [`Store::set_device_metadata`], if any.
    pub fn device_metadata(&self, kind: DeviceMetadata) -> Result<Option<String>> {
        self.sync_state(&kind.key())
    }
}
