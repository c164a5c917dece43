//! The password rules, as the Japanese medical-information security guideline asks: at least
//! 13 characters, or 8 for a user who signs in with a second factor as well; and nothing easy
//! to guess — common passwords, dictionary words, names, the user's own name, keyboard rows,
//! repeats and sequences — judged by zxcvbn's estimate of the guesses an attacker needs.
//!
//! Without a second factor the password alone guards the account, so zxcvbn must score it 3
//! or more (over about 10^8 guesses); with one, 2 or more (over about 10^6), which a random
//! 8-character password reaches and a common one does not. Every refusal names the rule it
//! broke. [`crate::accounts`] applies [`check`] to every password it sets.

use zxcvbn::Score;

use crate::error::{CoreError, CoreResult};

/// Shortest password for a user without a second factor.
pub const MIN_CHARS: usize = 13;
/// Shortest password for a user with a second factor.
pub const MIN_CHARS_WITH_SECOND_FACTOR: usize = 8;
/// Longest password accepted (a pasted document is not a password).
pub const MAX_CHARS: usize = 256;

/// Checks `password` for `username` against the rules; `with_second_factor` is whether the
/// user signs in with a second factor too. The error ([`CoreError::WeakPassword`]) says which
/// rule the password broke.
pub fn check(password: &str, username: &str, with_second_factor: bool) -> CoreResult<()> {
    let chars = password.chars().count();
    let min = if with_second_factor {
        MIN_CHARS_WITH_SECOND_FACTOR
    } else {
        MIN_CHARS
    };
    if chars < min {
        let rule = if with_second_factor {
            format!("at least {min} characters")
        } else {
            format!(
                "at least {min} characters ({MIN_CHARS_WITH_SECOND_FACTOR} for a user who also \
                 signs in with a second factor)"
            )
        };
        return Err(CoreError::WeakPassword(format!(
            "a password needs {rule}; this one has {chars}"
        )));
    }
    if chars > MAX_CHARS {
        return Err(CoreError::WeakPassword(format!(
            "a password may have at most {MAX_CHARS} characters; this one has {chars}"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(CoreError::WeakPassword(
            "a password may not contain control characters (tabs, line breaks)".into(),
        ));
    }
    let required = if with_second_factor {
        Score::Two
    } else {
        Score::Three
    };
    let estimate = zxcvbn::zxcvbn(password, &[username]);
    if estimate.score() < required {
        let why = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(CoreError::WeakPassword(format!(
            "this password is too easy to guess{why}: common passwords, dictionary words, \
             names, the user name, keyboard rows, repeats and sequences are refused; a few \
             unrelated words, or more characters, make a better one"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(password: &str, username: &str, with_second_factor: bool) -> String {
        match check(password, username, with_second_factor) {
            Err(CoreError::WeakPassword(message)) => message,
            other => panic!("{password:?} was not refused as weak: {other:?}"),
        }
    }

    #[test]
    fn the_test_harness_passwords_pass() {
        // The integration tests give every user "{username}-password-123".
        for name in ["alice", "admin", "pw_user", "path1", "a", "hub-admin"] {
            let password = format!("{name}-password-123");
            check(&password, name, false).unwrap_or_else(|e| panic!("{password}: {e}"));
        }
    }

    #[test]
    fn length_depends_on_the_second_factor() {
        let message = refused("Vx9#qT4!", "alice", false);
        assert!(message.contains("at least 13 characters"), "{message}");
        check("Vx9#qT4!", "alice", true).unwrap();
        let message = refused("Vx9#qT4", "alice", true);
        assert!(message.contains("at least 8 characters"), "{message}");
        let long = "correct horse battery staple ".repeat(10);
        assert!(refused(&long, "alice", false).contains("at most 256"));
    }

    #[test]
    fn common_repetitive_and_personal_passwords_are_refused() {
        for (password, second_factor) in [
            ("passwordpassword", false),
            ("1234567890123", false),
            ("aaaaaaaaaaaaaaaa", false),
            ("qwertyuiopasdf", false),
            ("password", true),
            ("12345678", true),
            ("iloveyou", true),
            ("abcabcabcabc", true),
        ] {
            let message = refused(password, "alice", second_factor);
            assert!(
                message.contains("too easy to guess"),
                "{password}: {message}"
            );
        }
        // The user's own name with a little decoration is as weak as a common word.
        refused("yamada-taro1", "yamada-taro", true);
    }

    #[test]
    fn a_phrase_of_unrelated_words_passes() {
        check("violet tractor embassy", "alice", false).unwrap();
        check("a-new-password-for-pw_user", "pw_user", false).unwrap();
    }
}
