//! Aperio SVS metadata: the `key = value` pairs Aperio packs into the first ImageDescription.

use std::collections::BTreeMap;

/// Parses an Aperio ImageDescription into `aperio.<key>` properties, as OpenSlide names them.
/// The first `|`-separated item is the library banner and geometry, not a key.
pub fn parse_description(description: &str) -> BTreeMap<String, String> {
    description
        .split('|')
        .skip(1)
        .filter_map(|item| item.split_once('='))
        .map(|(key, value)| (format!("aperio.{}", key.trim()), value.trim().to_string()))
        .filter(|(key, _)| key.len() > "aperio.".len())
        .collect()
}

/// Which associated image an Aperio directory holds, from the second line of its description
/// ("label 387x463", "macro 1280x431").
pub fn associated_name(description: &str) -> Option<&'static str> {
    let second_line = description.split('\n').nth(1)?;
    if second_line.starts_with("label") {
        Some("label")
    } else if second_line.starts_with("macro") {
        Some("macro")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_pairs_after_the_banner() {
        let d = "Aperio Image Library v11.2.1 \r\n46000x32914 [42673,5576 2220x2967] (240x240) JPEG/RGB Q=30;Aperio Image Library v10.0.51\r\n46920x33014 [0,100 46000x32914] (256x256) JPEG/RGB Q=30|AppMag = 20|MPP = 0.4990|Date = 12/29/09|Broken|= x";
        let p = parse_description(d);
        assert_eq!(p.get("aperio.AppMag").map(String::as_str), Some("20"));
        assert_eq!(p.get("aperio.MPP").map(String::as_str), Some("0.4990"));
        assert_eq!(p.get("aperio.Date").map(String::as_str), Some("12/29/09"));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn recognises_label_and_macro() {
        assert_eq!(
            associated_name("Aperio Image Library v11.2.1 \nlabel 387x463"),
            Some("label")
        );
        assert_eq!(
            associated_name("Aperio Image Library v11.2.1 \r\nmacro 1280x431"),
            Some("macro")
        );
        assert_eq!(
            associated_name("Aperio Image Library\r\n2220x2967 -> 574x768"),
            None
        );
        assert_eq!(associated_name("one line"), None);
    }
}
