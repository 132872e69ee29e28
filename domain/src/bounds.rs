//! Bounds on every number and string a request carries: checked at the API and again by the
//! workflow, so input sent straight to Temporal meets the same limits, and no value can make
//! workflow code overflow or an activity outlive its timeout.

use crate::{Error, Result};

/// Longest free text (reasons, summaries an operator types), in characters.
pub const MAX_TEXT: usize = 1024;
/// Longest name of a person or system (`deployer`, `by`, `approver`), in characters.
pub const MAX_PRINCIPAL: usize = 128;
/// Longest identifier of an instance, server or backend, in characters.
pub const MAX_ID: usize = 128;
/// Longest file path (a balancer's admin socket), in bytes.
pub const MAX_PATH: usize = 4096;
/// Most entries in a list a request carries (plan steps, approvers, gated batches).
pub const MAX_ITEMS: usize = 100;
/// Most instances a request may name (canaries).
pub const MAX_INSTANCES: usize = 10_000;
/// Most windows one health evaluation may sample.
pub const MAX_SAMPLES: u32 = 1_000;
/// Longest one health evaluation may take (windows times their length): a day.
pub const MAX_EVALUATION_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest a bake or any other single wait of a deploy may be: a day.
pub const MAX_WAIT_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest rollback window: a week.
pub const MAX_ROLLBACK_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// `value` is at most `max` characters, none of them a control character other than newline and
/// tab (it may be empty: a field that must not be is checked as such where it is read).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters (has {n})")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// `value` names someone: not blank, at most [`MAX_PRINCIPAL`] characters, no control characters.
pub fn check_principal(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    check_text(field, value, MAX_PRINCIPAL)?;
    if value.contains(['\n', '\t']) {
        return Err(Error::invalid(field, "must be one line"));
    }
    Ok(())
}

/// A DNS-label-like name: 1 to 63 of `a-z`, `0-9` and `-`, not starting with `-`.
pub fn check_name(field: &str, value: &str) -> Result<()> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok { Ok(()) } else { Err(Error::invalid(field, "must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'")) }
}

/// An identifier of an instance or server: 1 to [`MAX_ID`] printable ASCII characters without
/// spaces.
pub fn check_id(field: &str, value: &str) -> Result<()> {
    let ok = (1..=MAX_ID).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(Error::invalid(field, format!("must be 1 to {MAX_ID} printable ASCII characters without spaces"))) }
}

/// At most `max` entries.
pub fn check_count(field: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::invalid(field, format!("must have at most {max} entries (has {len})")));
    }
    Ok(())
}

/// At most `max` milliseconds, said in words in the refusal.
pub fn check_ms(field: &str, value: u64, max: u64, words: &str) -> Result<()> {
    if value > max {
        return Err(Error::invalid(field, format!("must be at most {max} ({words})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_bounded_and_printable() {
        check_text("reason", &"x".repeat(MAX_TEXT), MAX_TEXT).unwrap();
        let long = check_text("reason", &"x".repeat(MAX_TEXT + 1), MAX_TEXT).unwrap_err();
        assert_eq!(long.to_string(), "reason: must be at most 1024 characters (has 1025)");
        assert_eq!(check_text("reason", "a\u{7}b", MAX_TEXT).unwrap_err().field(), "reason");
        check_text("reason", "two\nlines", MAX_TEXT).unwrap();
    }

    #[test]
    fn principals_are_one_non_blank_line() {
        check_principal("by", "alice@example.com").unwrap();
        assert!(check_principal("by", "  ").unwrap_err().to_string().ends_with("must not be empty"));
        assert!(check_principal("by", "a\nb").unwrap_err().to_string().ends_with("one line"));
        assert_eq!(check_principal("by", &"a".repeat(MAX_PRINCIPAL + 1)).unwrap_err().field(), "by");
    }

    #[test]
    fn names_ids_counts_and_durations() {
        check_name("service", "checkout-2").unwrap();
        assert!(check_name("service", "Check Out").is_err());
        assert!(check_name("service", "-x").is_err());
        check_id("canary[0]", "i-0001").unwrap();
        assert!(check_id("canary[0]", "i 1").is_err());
        assert!(check_count("steps", 101, MAX_ITEMS).unwrap_err().to_string().contains("at most 100 entries (has 101)"));
        assert_eq!(check_ms("bake_ms", MAX_WAIT_MS + 1, MAX_WAIT_MS, "a day").unwrap_err().to_string(), "bake_ms: must be at most 86400000 (a day)");
    }
}
