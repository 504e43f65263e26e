//! Blob rules: which media types are served as themselves, which are shown in place, and the
//! quota of bytes a device may have in uploads in progress. (Who may read a blob is
//! [`super::rules::reference_counts`].)

use super::limits::UPLOAD_QUOTA_BYTES;
use crate::storage::{Result, StorageError};

/// The media types served as themselves; anything else is served as
/// `application/octet-stream` (never `text/html` or `image/svg+xml`, which a browser would run).
const MEDIA_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/heic",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/ogg",
    "audio/wav",
    "audio/amr",
    "audio/3gpp",
    "video/mp4",
    "video/3gpp",
    "video/webm",
    "application/pdf",
    "text/csv",
    "application/json",
    "application/geo+json",
    "application/octet-stream",
];

/// The allowed media type a device's claim maps to (parameters dropped, case folded).
pub fn allowed_media_type(claimed: &str) -> &'static str {
    let base = claimed.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    MEDIA_TYPES.iter().copied().find(|m| *m == base).unwrap_or("application/octet-stream")
}

/// Photos and recordings are shown in place; everything else downloads as a file.
pub fn shown_inline(media_type: &str) -> bool {
    media_type.starts_with("image/") || media_type.starts_with("audio/")
}

/// Whether a device that has `in_progress` bytes in other unfinished uploads may start one of
/// `length` bytes.
pub fn check_quota(in_progress: u64, length: u64) -> Result<()> {
    if in_progress.saturating_add(length) > UPLOAD_QUOTA_BYTES {
        return Err(StorageError::TooLarge(format!(
            "this device already has {in_progress} bytes in unfinished uploads; at most {UPLOAD_QUOTA_BYTES} \
             may be in progress at once: finish those first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_allow_listed_and_quota_counted() {
        assert_eq!(allowed_media_type("IMAGE/JPEG; q=1"), "image/jpeg");
        assert_eq!(allowed_media_type("text/html"), "application/octet-stream");
        assert!(shown_inline("audio/ogg") && !shown_inline("application/pdf"));
        assert!(check_quota(0, UPLOAD_QUOTA_BYTES).is_ok());
        assert!(check_quota(1, UPLOAD_QUOTA_BYTES).is_err());
    }
}
