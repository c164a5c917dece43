//! Names of versioned things (datasets, models) and their `name@N` references: one rule for
//! every kind, so a name that works for a dataset works for a model.

/// Checks the name of a versioned thing (`kind`: "dataset", "model"): 1–64 of `[a-z0-9._-]`,
/// starting with a letter or digit; the message says what is wrong.
pub fn check_versioned_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?}: 1–64 lowercase letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Parses `name@N` of a versioned thing (`kind` as for [`check_versioned_name`]).
pub fn parse_versioned_reference(kind: &str, reference: &str) -> Result<(String, i64), String> {
    let (name, version) = reference
        .split_once('@')
        .ok_or_else(|| format!("{reference:?}: expected NAME@VERSION"))?;
    let version = version
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("{reference:?}: version must be 1, 2, ..."))?;
    check_versioned_name(kind, name)?;
    Ok((name.to_string(), version))
}
