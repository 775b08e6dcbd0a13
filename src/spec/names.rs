//! The naming rule shared by endpoints and deployments (CONTRACT §1).

use super::SpecError;

/// Checks `name` against `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`, 3 to 32 characters.
/// `what` is "endpoint" or "deployment", used in the message.
pub fn validate_name(what: &str, name: &str) -> Result<(), SpecError> {
    let rule = "3 to 32 characters: letters, digits and '-', starting with a letter and not ending with '-'";
    let len = name.chars().count();
    let bytes = name.as_bytes();
    let ok = (3..=32).contains(&len)
        && bytes[0].is_ascii_alphabetic()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(format!("invalid {what} name {name:?}: a name has {rule}")))
    }
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_azure_names() {
        for n in ["blue", "my-endpoint", "a1b", "Green-2", &"x".repeat(32)] {
            assert!(validate_name("deployment", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for n in ["", "ab", "1abc", "-abc", "abc-", "a_bc", "blüe", &"x".repeat(33), "a bc"] {
            let err = validate_name("deployment", n).unwrap_err();
            assert_eq!(err.kind, crate::spec::SpecErrorKind::Invalid);
            assert!(err.message.contains("invalid deployment name"), "{}", err.message);
        }
    }
}
