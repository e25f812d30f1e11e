//! SASLprep (RFC 4013), the parts that decide equality for this server.
//!
//! Guarantees: the RFC 4013 mapping is applied in full (non-ASCII spaces, table
//! C.1.2, become U+0020; the "commonly mapped to nothing" characters of table B.1
//! are removed), and the RFC 4013 prohibited output is refused: ASCII and non-ASCII
//! control characters (C.2.1, C.2.2), private use (C.3), non-characters (C.4),
//! characters inappropriate for plain text (C.6) or canonical representation
//! (C.7), display-changing characters (C.8) and tagging characters (C.9).
//! Surrogates (C.5) cannot occur in a Rust `str`.
//!
//! Deliberately absent: NFKC normalisation, the unassigned-code-point check and the
//! bidi rule. They need the full Unicode tables (the `stringprep` crate pulls
//! `unicode-normalization`, `unicode-bidi` and `unicode-properties`, which this
//! 2-core build does not carry for one function). NFKC is the identity on ASCII, so
//! for ASCII strings this function is exactly RFC 4013's; a non-ASCII string is
//! mapped and checked but compared as the client sent it, which matches clients
//! that send NFC text (all common ones), because the same function prepares the
//! password when the account is created.

use std::borrow::Cow;

/// Why a string was refused by [`saslprep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslprepError {
    /// The string maps to nothing.
    #[error("empty after SASLprep mapping")]
    Empty,
    /// The string holds a character RFC 4013 prohibits.
    #[error("prohibited character U+{0:04X}")]
    Prohibited(u32),
}

/// Prepares `input` for comparison, or says which character is prohibited.
///
/// Returns the input unchanged (borrowed) when the mapping does nothing, which is
/// the common case.
pub fn saslprep(input: &str) -> Result<Cow<'_, str>, SaslprepError> {
    let needs_mapping = input
        .chars()
        .any(|c| is_non_ascii_space(c) || is_mapped_to_nothing(c));
    let prepared: Cow<'_, str> = if needs_mapping {
        Cow::Owned(
            input
                .chars()
                .filter(|&c| !is_mapped_to_nothing(c))
                .map(|c| if is_non_ascii_space(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(input)
    };
    if prepared.is_empty() {
        return Err(SaslprepError::Empty);
    }
    if let Some(c) = prepared.chars().find(|&c| is_prohibited(c)) {
        return Err(SaslprepError::Prohibited(u32::from(c)));
    }
    Ok(prepared)
}

/// RFC 3454 table C.1.2.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1.
fn is_mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 4013 section 2.3: tables C.2.1, C.2.2, C.3, C.4, C.6, C.7, C.8, C.9.
fn is_prohibited(c: char) -> bool {
    let cp = u32::from(c);
    // C.2.1 and the C0/C1 part of C.2.2.
    if c.is_control() {
        return true;
    }
    // Rest of C.2.2.
    if matches!(
        c,
        '\u{06DD}'
            | '\u{070F}'
            | '\u{180E}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2063}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
            | '\u{1D173}'..='\u{1D17A}'
    ) {
        return true;
    }
    // C.3 private use.
    if matches!(cp, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD) {
        return true;
    }
    // C.4 non-character code points.
    if matches!(cp, 0xFDD0..=0xFDEF) || (cp & 0xFFFE) == 0xFFFE {
        return true;
    }
    // C.6, C.7, C.8, C.9.
    matches!(
        cp,
        0xFFF9..=0xFFFD
            | 0x2FF0..=0x2FFB
            | 0x0340
            | 0x0341
            | 0x200E
            | 0x200F
            | 0x202A..=0x202E
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 section 3, the examples this implementation covers.
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(saslprep("user").unwrap(), "user");
        assert_eq!(saslprep("USER").unwrap(), "USER");
        assert_eq!(saslprep("\u{0007}"), Err(SaslprepError::Prohibited(7)));
        assert!(matches!(saslprep("user"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn maps_spaces_and_refuses_controls_and_private_use() {
        assert_eq!(saslprep("a\u{00A0}b\u{3000}c").unwrap(), "a b c");
        assert_eq!(saslprep("\u{200B}"), Ok(Cow::Owned(" ".to_string())));
        assert_eq!(saslprep("\u{00AD}"), Err(SaslprepError::Empty));
        assert_eq!(saslprep(""), Err(SaslprepError::Empty));
        assert_eq!(saslprep("a\u{7F}"), Err(SaslprepError::Prohibited(0x7F)));
        assert_eq!(saslprep("a\u{85}"), Err(SaslprepError::Prohibited(0x85)));
        assert_eq!(saslprep("\u{E000}"), Err(SaslprepError::Prohibited(0xE000)));
        assert_eq!(saslprep("\u{FFFF}"), Err(SaslprepError::Prohibited(0xFFFF)));
        assert_eq!(
            saslprep("\u{202E}x"),
            Err(SaslprepError::Prohibited(0x202E))
        );
        assert_eq!(saslprep("pässwörd").unwrap(), "pässwörd");
    }
}
