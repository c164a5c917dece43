//! The two languages the platform speaks and the hospital's local time: the API speaks UTC,
//! people read their hospital's clock. Browser pages translate themselves from the catalogues
//! in `web/static/i18n/`; the server's own words (reports, e-mails) are typed tables per
//! language in the crates that write them, so a missing translation fails the build.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::error::CoreError;

/// The hospital's zone when none was chosen.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Tokyo";

/// A language of the user interface, reports and e-mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// 日本語 (the default for a hospital).
    Ja,
    /// English.
    En,
}

impl Lang {
    /// Every language, Japanese first.
    pub const ALL: [Lang; 2] = [Lang::Ja, Lang::En];

    /// `ja` or `en` (BCP 47, as in `<html lang>` and `Accept-Language`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// The first language of an `Accept-Language` header the platform speaks, if any.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        header
            .split(',')
            .filter_map(|part| part.split(';').next())
            .find_map(|tag| tag.trim().split('-').next()?.parse().ok())
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lang {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ja" | "jpn" | "japanese" | "日本語" => Ok(Lang::Ja),
            "en" | "eng" | "english" => Ok(Lang::En),
            _ => Err(CoreError::Invalid(format!(
                "unknown language {s:?} (ja or en)"
            ))),
        }
    }
}

/// Whether a character is Japanese script: kana (hiragana, katakana, half-width katakana),
/// kanji, or the repetition mark 々. Checks of translations use it.
pub fn is_japanese(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}'
        | '\u{31f0}'..='\u{31ff}'
        | '\u{3400}'..='\u{4dbf}'
        | '\u{4e00}'..='\u{9fff}'
        | '\u{f900}'..='\u{faff}'
        | '\u{ff66}'..='\u{ff9f}'
        | '\u{3005}')
}

/// Checks an IANA time zone name (`Asia/Tokyo`, `UTC`) against the bundled database.
pub fn check_time_zone(name: &str) -> Result<(), CoreError> {
    TimeZone::get(name).map(|_| ()).map_err(|_| {
        CoreError::Invalid(format!(
            "unknown time zone {name:?} (an IANA name such as Asia/Tokyo)"
        ))
    })
}

/// A moment (unix seconds) as the hospital's clock shows it, with the zone's abbreviation:
/// `2026年12月5日 15:04 JST` in Japanese, `5 Dec 2026 15:04 JST` in English. An unknown zone
/// falls back to UTC, which the text then names.
pub fn local_time(unix: i64, time_zone: &str, lang: Lang) -> String {
    let zone = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let Ok(at) = Timestamp::from_second(unix) else {
        return "—".to_string();
    };
    let zoned = at.to_zoned_datetime(zone);
    let pattern = match lang {
        Lang::Ja => "%Y年%-m月%-d日 %H:%M %Z",
        Lang::En => "%-d %b %Y %H:%M %Z",
    };
    zoned.strftime(pattern).to_string()
}

/// The calendar date alone, in the hospital's zone (`2026年12月5日`, `5 Dec 2026`).
pub fn local_date(unix: i64, time_zone: &str, lang: Lang) -> String {
    let zone = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let Ok(at) = Timestamp::from_second(unix) else {
        return "—".to_string();
    };
    let zoned = at.to_zoned_datetime(zone);
    let pattern = match lang {
        Lang::Ja => "%Y年%-m月%-d日",
        Lang::En => "%-d %b %Y",
    };
    zoned.strftime(pattern).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokyo_is_nine_hours_ahead_and_named() {
        // 2026-12-05 06:04:00 UTC
        let at = 1_796_450_640;
        assert_eq!(
            local_time(at, "Asia/Tokyo", Lang::Ja),
            "2026年12月5日 15:04 JST"
        );
        assert_eq!(
            local_time(at, "Asia/Tokyo", Lang::En),
            "5 Dec 2026 15:04 JST"
        );
        assert_eq!(local_time(at, "UTC", Lang::En), "5 Dec 2026 06:04 UTC");
        assert_eq!(
            local_date(at - 7 * 3600, "Asia/Tokyo", Lang::Ja),
            "2026年12月5日"
        );
        assert_eq!(local_date(at - 7 * 3600, "UTC", Lang::Ja), "2026年12月4日");
    }

    #[test]
    fn languages_parse_from_headers_and_names() {
        assert_eq!(
            Lang::from_accept_language("ja-JP,ja;q=0.9,en;q=0.8"),
            Some(Lang::Ja)
        );
        assert_eq!(
            Lang::from_accept_language("fr-FR, en-US;q=0.7"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("fr"), None);
        assert!("de".parse::<Lang>().is_err());
        assert!(check_time_zone("Asia/Tokyo").is_ok());
        assert!(check_time_zone("Mars/Olympus").is_err());
    }
}
