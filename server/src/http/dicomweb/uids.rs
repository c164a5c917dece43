//! The DICOM UIDs of a slide, computed from its id so that no table has to keep them.
//!
//! Slide ids are UUIDs, and a UUID is a UID root of its own (ITU-T X.667, DICOM PS3.5 B.2):
//! `2.25.` followed by the UUID's 128 bits as one decimal integer. So a slide's study is
//! `2.25.<uuid>`, its one series is the study's UID with `.1` added, and the instance of pyramid
//! level `L` is the series' UID with `.<L + 1>` added. The few other UIDs the metadata needs
//! (frame of reference, dimension organisation, specimen, pyramid) hang off the study's UID with
//! their own fixed numbers, so they never collide with a series or an instance.
//!
//! Parsing is strict: only the exact text this module writes names a slide (no leading zeros, no
//! upper-case UUIDs, nothing after the level number), so every accepted UID has one spelling and
//! everything else is answered as an unknown slide.

/// The root of UUID-derived UIDs.
const UUID_ROOT: &str = "2.25.";

/// Digits of the largest 128-bit number.
const MAX_U128_DIGITS: usize = 39;

/// The Study Instance UID of a slide; `None` for an id that is not a lower-case UUID (no slide
/// this server registers has one).
pub(super) fn study_uid(slide_id: &str) -> Option<String> {
    parse_uuid(slide_id).map(|n| format!("{UUID_ROOT}{n}"))
}

/// The id of the slide a Study Instance UID names, if the UID is one [`study_uid`] writes.
pub(super) fn slide_of_study(uid: &str) -> Option<String> {
    let digits = uid.strip_prefix(UUID_ROOT)?;
    if digits.len() > MAX_U128_DIGITS {
        return None;
    }
    canonical_number(digits).map(format_uuid)
}

/// The Series Instance UID of a study (one series per slide).
pub(super) fn series_uid(study: &str) -> String {
    format!("{study}.1")
}

/// The SOP Instance UID of pyramid level `level` (0 is full resolution).
pub(super) fn instance_uid(study: &str, level: usize) -> String {
    format!("{study}.1.{}", level + 1)
}

/// The Frame of Reference UID: every level of a slide shares the slide's coordinates.
pub(super) fn frame_of_reference_uid(study: &str) -> String {
    format!("{study}.2")
}

/// The Dimension Organization UID every instance of the slide shares.
pub(super) fn dimension_organization_uid(study: &str) -> String {
    format!("{study}.3")
}

/// The Specimen UID of the one specimen (the slide itself).
pub(super) fn specimen_uid(study: &str) -> String {
    format!("{study}.4")
}

/// The Pyramid UID that groups the levels into one pyramid.
pub(super) fn pyramid_uid(study: &str) -> String {
    format!("{study}.5")
}

/// Whether `series` is the series of `study`.
pub(super) fn is_series(study: &str, series: &str) -> bool {
    series.strip_prefix(study) == Some(".1")
}

/// The pyramid level an instance UID of `study` names (not checked against the slide's levels).
pub(super) fn level_of_instance(study: &str, instance: &str) -> Option<usize> {
    let number = instance.strip_prefix(study)?.strip_prefix(".1.")?;
    // More levels than this are never read: 2^63 pixels wide would be needed.
    if number.len() > 4 {
        return None;
    }
    let number = canonical_number(number)?;
    usize::try_from(number.checked_sub(1)?).ok()
}

/// A decimal number as a UID component writes it: digits only, no leading zero (but `0`).
fn canonical_number(digits: &str) -> Option<u128> {
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !well_formed {
        return None;
    }
    digits.parse().ok()
}

/// A UUID in its canonical form (lower-case hex, hyphens at 8, 13, 18 and 23) as a number.
fn parse_uuid(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value = 0u128;
    for (at, &b) in bytes.iter().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(digit);
    }
    Some(value)
}

/// A number as a canonical UUID.
fn format_uuid(value: u128) -> String {
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slide_ids_round_trip_through_their_uids() {
        for id in [
            "00000000-0000-0000-0000-000000000000",
            "0f8b3c2e-4d1a-4b7e-9c3d-2a1b0c9d8e7f",
            "d3b07384-d9a0-4c9b-8f1e-6a5b4c3d2e1f",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            let study = study_uid(id).unwrap();
            assert!(study.len() <= 64 - ".1.9999".len(), "{study} is too long");
            assert_eq!(slide_of_study(&study).as_deref(), Some(id), "{study}");
            let series = series_uid(&study);
            assert!(is_series(&study, &series));
            for level in [0, 1, 7, 12] {
                let instance = instance_uid(&study, level);
                assert_eq!(level_of_instance(&study, &instance), Some(level));
                assert_ne!(instance, series);
            }
        }
        assert_eq!(
            study_uid("ffffffff-ffff-ffff-ffff-ffffffffffff").as_deref(),
            Some("2.25.340282366920938463463374607431768211455")
        );
        assert_eq!(
            study_uid("00000000-0000-0000-0000-000000000001").as_deref(),
            Some("2.25.1")
        );
    }

    #[test]
    fn foreign_and_malformed_uids_name_no_slide() {
        for uid in [
            "",
            "2.25.",
            "2.25.012",
            "2.25.12a",
            "2.25.-1",
            "2.25.+1",
            "2.25.1.1",
            "2.25.340282366920938463463374607431768211456",
            "2.25.0000000000000000000000000000000000000001",
            "1.2.840.10008.5.1.4.1.1.77.1.6",
            "2.250.1",
        ] {
            assert_eq!(slide_of_study(uid), None, "{uid:?}");
        }
        // Ids that are not canonical UUIDs have no study.
        for id in [
            "D3B07384-D9A0-4C9B-8F1E-6A5B4C3D2E1F",
            "d3b07384d9a04c9b8f1e6a5b4c3d2e1f",
            "d3b07384-d9a0-4c9b-8f1e-6a5b4c3d2e1",
            "no-such-slide",
        ] {
            assert_eq!(study_uid(id), None, "{id:?}");
        }
        let study = study_uid("d3b07384-d9a0-4c9b-8f1e-6a5b4c3d2e1f").unwrap();
        let other = study_uid("d3b07384-d9a0-4c9b-8f1e-6a5b4c3d2e10").unwrap();
        for series in [
            format!("{study}.2"),
            format!("{study}.01"),
            format!("{study}.1.1"),
            series_uid(&other),
            study.clone(),
        ] {
            assert!(!is_series(&study, &series), "{series}");
        }
        for instance in [
            format!("{study}.1.0"),
            format!("{study}.1.01"),
            format!("{study}.1.1.1"),
            format!("{study}.1."),
            format!("{study}.2.1"),
            format!("{study}.1.99999"),
            instance_uid(&other, 0),
        ] {
            assert_eq!(level_of_instance(&study, &instance), None, "{instance}");
        }
        // The other UIDs of a slide are neither its series nor an instance.
        for uid in [
            frame_of_reference_uid(&study),
            dimension_organization_uid(&study),
            specimen_uid(&study),
            pyramid_uid(&study),
        ] {
            assert!(!is_series(&study, &uid));
            assert_eq!(level_of_instance(&study, &uid), None);
        }
    }
}
