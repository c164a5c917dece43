//! User-supplied file names: checked, then reduced to a safe character set before they become
//! part of an object key or a path. A name is never used as a path as given.

use pathfed_core::http::ApiError;

/// Longest file name accepted.
const MAX_NAME_CHARS: usize = 200;

/// Checks an uploaded file name: one plain name, no folders, no `..`, no control characters.
pub fn check_filename(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(
            "invalid_filename",
            format!("file name {name:?} is not acceptable: {why}"),
        ))
    };
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return bad("it must have 1 to 200 characters");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("it must not contain folders");
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return bad("it must not start with a dot");
    }
    if name.chars().any(char::is_control) {
        return bad("it must not contain control characters");
    }
    Ok(())
}

/// The stored form of a name: letters, digits, `.`, `-`, `_`; anything else becomes `_`.
pub fn sanitise(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "slide".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_names_are_refused() {
        for name in [
            "../../etc/passwd",
            "a/b.svs",
            "..",
            ".hidden",
            "",
            "x\u{0}.svs",
            "c:\\x.svs",
        ] {
            assert!(check_filename(name).is_err(), "{name:?} accepted");
        }
        check_filename("CMU-1 (copy).svs").unwrap();
    }

    #[test]
    fn sanitised_names_are_plain() {
        assert_eq!(sanitise("CMU-1 (copy).svs"), "CMU-1__copy_.svs");
        assert_eq!(sanitise("生検.ndpi"), "__.ndpi");
        assert_eq!(sanitise("..."), "slide");
    }
}
