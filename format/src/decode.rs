//! postcard decoding that keeps our own validation messages.
//!
//! postcard reports every `serde::de::Error::custom` as "Serde Deserialization Error" and drops
//! the message. Types that validate while they decode ([`crate::RelPath`],
//! [`crate::PublicKey`]) fail through [`invalid`], which also keeps the message for this
//! thread, and [`body`] puts it back into the error, so "unsafe path "../x": `..` component"
//! reaches the user instead.

use std::cell::RefCell;
use std::fmt::Display;

use serde::Deserialize;

use crate::{Error, Result};

thread_local! {
    static REASON: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A decode error for `reason`, kept for [`body`].
pub(crate) fn invalid<E: serde::de::Error>(reason: impl Display) -> E {
    let reason = reason.to_string();
    REASON.with(|r| *r.borrow_mut() = Some(reason.clone()));
    E::custom(reason)
}

/// Decodes the postcard body of `what`; a failure names the rule that failed.
pub(crate) fn body<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T> {
    REASON.with(|r| r.borrow_mut().take());
    postcard::from_bytes(bytes).map_err(|e| {
        let kept = REASON.with(|r| r.borrow_mut().take());
        Error::malformed(what, kept.unwrap_or_else(|| e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    #[test]
    fn a_validation_failure_keeps_its_reason() {
        let bytes = postcard::to_stdvec("a/../b").unwrap();
        let err = body::<RelPath>("manifest", &bytes).unwrap_err().to_string();
        assert!(err.contains("unsafe path \"a/../b\""), "{err}");
        // A plain format error still reads as postcard's, not as a stale reason.
        let err = body::<(RelPath, u64)>("manifest", &bytes[..2])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("unsafe"), "{err}");
        let weak = postcard::to_stdvec(&[0u8; 32]).unwrap();
        let err = body::<crate::PublicKey>("root document", &weak)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key"), "{err}");
    }
}
