//! The browser UI speaks Japanese and English. A static check, no server: the catalogues in
//! `web/static/i18n/`, the pages and scripts that use them, and the error codes the API can
//! answer with. Each test lists every offence it finds, so one run shows all there is to fix.
//!
//! - Every catalogue parses; every key starts with its file's area, appears once and has
//!   non-empty `en` and `ja` (no other language) with the same `{placeholders}`; every Japanese
//!   text has kana or kanji unless it is language-neutral (digits, symbols and the terms of
//!   [`LANGUAGE_NEUTRAL`]).
//! - Every key a page or script names exists: `data-i18n*` attributes, `t("…")` arguments and
//!   key-shaped string literals; every dynamic family `t(`area.prefix.${…}`)` has keys under
//!   its prefix; and every key a page uses is in an area the page loads.
//! - Every error code the Rust sources can answer with has an `errors.<code>` entry.
//! - Every page has `<html lang>`, and nothing in its body (text, placeholders, titles, ARIA
//!   labels) is shown untranslated.
//!
//! One test runs a server: the organ and hub lists that forms choose from, and the taxonomies'
//! labels in both languages, through the API on both backends.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pathfed_core::locale::is_japanese;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{As, BACKENDS, TestServer};

/// Terms a Japanese text may show as they are (product, units, formats, technical names), so a
/// text made only of them, digits and symbols is language-neutral.
const LANGUAGE_NEUTRAL: &[&str] = &[
    "pathfed", "OK", "ID", "AI", "AUC", "AUROC", "µm", "px", "KiB", "MiB", "GiB", "TiB", "PDF",
    "HTML", "JSON", "GeoJSON", "ZIP", "SVS", "TIFF", "CPU", "GPU", "CUDA", "wgpu", "ResNet", "MIL",
    "SHA-256", "flex",
];

/// The attributes `translatePage` fills, with the attribute each one translates.
const I18N_ATTRIBUTES: [(&str, &str); 4] = [
    ("data-i18n", ""),
    ("data-i18n-placeholder", "placeholder"),
    ("data-i18n-title", "title"),
    ("data-i18n-aria-label", "aria-label"),
];

/// Areas every page loads (`requireSession` and `initI18n` add them).
const ALWAYS_LOADED: [&str; 2] = ["common", "errors"];

/// The crates whose sources can answer an API error.
const API_CRATES: [&str; 8] = [
    "core",
    "consult",
    "ingest",
    "datasets",
    "training",
    "inference",
    "models",
    "server",
];

/// HTML elements without a closing tag.
const VOID_ELEMENTS: [&str; 13] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// Names that end a string which is a file, not a catalogue key (`case.html`).
const FILE_SUFFIXES: [&str; 8] = [
    ".js", ".html", ".css", ".json", ".png", ".svg", ".jpg", ".pdf",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn web_static() -> PathBuf {
    root().join("web").join("static")
}

/// A path as messages name it, from the repository root.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", shown(path)))
}

/// Files under `dir` whose names end with `suffix`, sorted; in sub-folders too if `deep`.
fn files(dir: &Path, suffix: &str, deep: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", shown(&dir)));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if deep {
                    pending.push(path);
                }
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Fails with every problem, one per line.
fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---- Text ------------------------------------------------------------------------------------

/// The `{name}` placeholders of a text.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        found.insert(rest[open..open + close + 1].to_string());
        rest = &rest[open + close + 1..];
    }
    found
}

/// `text` with every `{placeholder}` and `&entity;` replaced by a space.
fn without_markers(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let closer = match c {
            '{' => Some('}'),
            '&' => Some(';'),
            _ => None,
        };
        let end = closer.and_then(|closer| {
            let tail = &text[at + 1..];
            let len = tail.find(closer)?;
            let inner = &tail[..len];
            let fits = !inner.is_empty()
                && inner.len() <= 32
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '#');
            fits.then_some(at + 1 + len)
        });
        match end {
            Some(end) => {
                out.push(' ');
                while chars.peek().is_some_and(|&(i, _)| i <= end) {
                    chars.next();
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// `text` with each occurrence of `word` that stands alone (no letter or digit beside it)
/// replaced by a space.
fn remove_word(text: &str, word: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push(' ');
        last = at + word.len();
    }
    out.push_str(&text[last..]);
    out
}

/// True for text that reads the same in every language: only digits, symbols, placeholders
/// and [`LANGUAGE_NEUTRAL`] terms.
fn is_language_neutral(text: &str) -> bool {
    let mut terms = LANGUAGE_NEUTRAL.to_vec();
    terms.sort_by_key(|term| std::cmp::Reverse(term.len()));
    let rest = terms
        .iter()
        .fold(without_markers(text), |rest, term| remove_word(&rest, term));
    !rest.chars().any(char::is_alphabetic)
}

// ---- Catalogues --------------------------------------------------------------------------------

/// Every key of every catalogue, with its area, and what is wrong with them.
#[derive(Default)]
struct Catalogue {
    /// Key → area (the file it is in).
    keys: BTreeMap<String, String>,
    /// Areas, one per file.
    areas: BTreeSet<String>,
    problems: Vec<String>,
}

impl Catalogue {
    fn load() -> Self {
        let dir = web_static().join("i18n");
        let mut catalogue = Self::default();
        for path in files(&dir, ".json", false) {
            let area = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let problems = catalogue.add(&area, &read(&path));
            catalogue.problems.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{}: {p}", shown(&path))),
            );
        }
        if !catalogue.areas.contains("errors") {
            catalogue
                .problems
                .push("web/static/i18n/errors.json is missing".to_string());
        }
        catalogue
    }

    /// Adds the catalogue of `area` (its file's text); returns what is wrong with it.
    fn add(&mut self, area: &str, text: &str) -> Vec<String> {
        self.areas.insert(area.to_string());
        let parsed: Value = match serde_json::from_str(text) {
            Ok(parsed) => parsed,
            Err(e) => return vec![format!("not JSON: {e}")],
        };
        let Some(entries) = parsed.as_object() else {
            return vec!["not a JSON object of keys".to_string()];
        };
        let mut problems = Vec::new();
        for (key, value) in entries {
            problems.extend(check_entry(area, key, value, text));
            if self.keys.insert(key.clone(), area.to_string()).is_some() {
                problems.push(format!("{key}: also in another catalogue"));
            }
        }
        problems
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.keys.keys().any(|key| key.starts_with(prefix))
    }
}

/// What is wrong with one catalogue entry.
fn check_entry(area: &str, key: &str, value: &Value, file_text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let in_area = key
        .strip_prefix(area)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| !rest.is_empty());
    if !in_area {
        problems.push(format!(
            "{key}: not a key of this area (keys start with {area:?}.)"
        ));
    }
    // Keys stand in HTML attributes and JavaScript strings as they are.
    let well_formed = key
        .chars()
        .all(|c| c.is_ascii_graphic() && !"\"'`{}$<>&\\".contains(c))
        && !key.contains("..")
        && !key.ends_with('.');
    if !well_formed {
        problems.push(format!(
            "{key}: keys are printable ASCII without quotes, braces, '$', '<', '>', '&' or '\\'"
        ));
    }
    // serde keeps the last of two equal keys; the file must not have two.
    let quoted = format!("\"{key}\"");
    let written = file_text
        .match_indices(&quoted)
        .filter(|(at, _)| file_text[at + quoted.len()..].trim_start().starts_with(':'))
        .count();
    if written > 1 {
        problems.push(format!("{key}: written {written} times"));
    }
    let Some(languages) = value.as_object() else {
        problems.push(format!("{key}: not an object of \"en\" and \"ja\""));
        return problems;
    };
    for language in languages.keys() {
        if language != "en" && language != "ja" {
            problems.push(format!("{key}: language {language:?} (only en and ja)"));
        }
    }
    let text = |language: &str| languages.get(language).and_then(Value::as_str);
    for language in ["en", "ja"] {
        if text(language).is_none_or(|t| t.trim().is_empty()) {
            problems.push(format!("{key}: no {language} text"));
        }
    }
    if let (Some(en), Some(ja)) = (text("en"), text("ja")) {
        if !ja.chars().any(is_japanese) && !is_language_neutral(ja) {
            problems.push(format!("{key}: the ja text {ja:?} has no Japanese"));
        }
        if placeholders(en) != placeholders(ja) {
            problems.push(format!(
                "{key}: placeholders differ: en {:?}, ja {:?}",
                placeholders(en),
                placeholders(ja)
            ));
        }
    }
    problems
}

// ---- Pages -------------------------------------------------------------------------------------

/// A key named by a page or script, where.
#[derive(Debug, Clone)]
struct Used {
    key: String,
    line: usize,
}

/// What a page holds and what is wrong with it.
#[derive(Debug, Default)]
struct Page {
    /// Keys of `data-i18n*` attributes.
    keys: Vec<Used>,
    /// `src` of its scripts.
    scripts: Vec<String>,
    /// `<html lang>` is there.
    has_lang: bool,
    /// Untranslated text and misplaced `data-i18n`.
    problems: Vec<String>,
}

/// An open element.
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    line: usize,
    has_children: bool,
}

fn at(s: &[char], i: usize, pattern: &str) -> bool {
    pattern
        .chars()
        .enumerate()
        .all(|(offset, p)| s.get(i + offset) == Some(&p))
}

fn find_from(s: &[char], from: usize, pattern: &str) -> Option<usize> {
    (from..s.len()).find(|&k| at(s, k, pattern))
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

fn line_at(s: &[char], i: usize) -> usize {
    s[..i.min(s.len())].iter().filter(|&&c| c == '\n').count() + 1
}

/// The run of characters from `i` that `keep` accepts, and where it ends.
fn run(s: &[char], i: usize, keep: impl Fn(char) -> bool) -> (String, usize) {
    let mut end = i;
    while end < s.len() && keep(s[end]) {
        end += 1;
    }
    (s[i..end].iter().collect(), end)
}

/// Reads a page: its keys and scripts, and every untranslated text.
fn scan_page(html: &str) -> Page {
    let s: Vec<char> = html.chars().collect();
    let mut page = Page::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] != '<' {
            let end = find_from(&s, i + 1, "<").unwrap_or(s.len());
            let text: String = s[i..end].iter().collect();
            check_text(&mut page, &stack, &text, line_at(&s, i));
            i = end;
            continue;
        }
        if at(&s, i, "<!--") {
            i = find_from(&s, i + 4, "-->").map_or(s.len(), |end| end + 3);
            continue;
        }
        if at(&s, i, "<!") || at(&s, i, "<?") {
            i = find_from(&s, i, ">").map_or(s.len(), |end| end + 1);
            continue;
        }
        if at(&s, i, "</") {
            let (name, after) = run(&s, i + 2, |c| c.is_ascii_alphanumeric() || c == '-');
            let name = name.to_ascii_lowercase();
            i = find_from(&s, after, ">").map_or(s.len(), |end| end + 1);
            if let Some(depth) = stack.iter().rposition(|e| e.name == name) {
                while stack.len() > depth {
                    if let Some(element) = stack.pop() {
                        close(&mut page, &element);
                    }
                }
            }
            continue;
        }
        let (name, mut j) = run(&s, i + 1, |c| c.is_ascii_alphanumeric() || c == '-');
        let name = name.to_ascii_lowercase();
        if name.is_empty() {
            // A lone `<` in text.
            check_text(&mut page, &stack, "<", line_at(&s, i));
            i += 1;
            continue;
        }
        let mut attrs = BTreeMap::new();
        let mut self_closing = false;
        loop {
            j = skip_ws(&s, j);
            if j >= s.len() {
                break;
            }
            if s[j] == '>' {
                j += 1;
                break;
            }
            if at(&s, j, "/>") {
                self_closing = true;
                j += 2;
                break;
            }
            let (attr, after) = run(&s, j, |c| {
                !c.is_whitespace() && !matches!(c, '=' | '>' | '/' | '"' | '\'')
            });
            if attr.is_empty() {
                j += 1;
                continue;
            }
            j = skip_ws(&s, after);
            let mut value = String::new();
            if j < s.len() && s[j] == '=' {
                j = skip_ws(&s, j + 1);
                if j < s.len() && (s[j] == '"' || s[j] == '\'') {
                    let quote = s[j];
                    let end = (j + 1..s.len()).find(|&k| s[k] == quote).unwrap_or(s.len());
                    value = s[j + 1..end].iter().collect();
                    j = end + 1;
                } else {
                    let (unquoted, end) = run(&s, j, |c| !c.is_whitespace() && c != '>');
                    value = unquoted;
                    j = end;
                }
            }
            attrs.insert(attr.to_ascii_lowercase(), value);
        }
        let element = Element {
            name: name.clone(),
            attrs,
            line: line_at(&s, i),
            has_children: false,
        };
        open(&mut page, &stack, &element);
        if let Some(parent) = stack.last_mut() {
            parent.has_children = true;
        }
        if name == "script" || name == "style" {
            // Raw text up to the closing tag: code, not words on the page.
            let end = find_from(&s, j, &format!("</{name}")).unwrap_or(s.len());
            i = find_from(&s, end, ">").map_or(s.len(), |end| end + 1);
            continue;
        }
        if self_closing || VOID_ELEMENTS.contains(&name.as_str()) {
            close(&mut page, &element);
        } else {
            stack.push(element);
        }
        i = j;
    }
    while let Some(element) = stack.pop() {
        close(&mut page, &element);
    }
    page
}

fn in_body(stack: &[Element], element: Option<&Element>) -> bool {
    stack.iter().chain(element).any(|e| e.name == "body")
}

/// The checks of an opening tag: its keys, and its attributes that people read.
fn open(page: &mut Page, stack: &[Element], element: &Element) {
    let line = element.line;
    if element.name == "html" {
        page.has_lang = element.attrs.contains_key("lang");
    }
    if element.name == "script"
        && let Some(src) = element.attrs.get("src")
    {
        page.scripts.push(src.clone());
    }
    for (attr, value) in &element.attrs {
        if !attr.starts_with("data-i18n") {
            continue;
        }
        if !I18N_ATTRIBUTES.iter().any(|(name, _)| name == attr) {
            page.problems.push(format!(
                "line {line}: {attr} is not an attribute translatePage fills"
            ));
        } else if value.trim().is_empty() {
            page.problems
                .push(format!("line {line}: {attr} names no key"));
        } else {
            page.keys.push(Used {
                key: value.trim().to_string(),
                line,
            });
        }
    }
    if !in_body(stack, Some(element)) {
        return;
    }
    for (i18n, shown_attr) in I18N_ATTRIBUTES.iter().skip(1) {
        let Some(value) = element.attrs.get(*shown_attr) else {
            continue;
        };
        if !is_language_neutral(value) && !element.attrs.contains_key(*i18n) {
            page.problems.push(format!(
                "line {line}: <{}> {shown_attr}={value:?} has no {i18n}",
                element.name
            ));
        }
    }
}

/// The check of a closed element: `data-i18n` replaces its whole text, so it may hold none.
fn close(page: &mut Page, element: &Element) {
    if element.has_children && element.attrs.contains_key("data-i18n") {
        page.problems.push(format!(
            "line {}: <{}> has data-i18n and holds elements, which its translation would remove",
            element.line, element.name
        ));
    }
}

/// A text node: words in the body must come from a catalogue, or be marked as written in one
/// language on purpose (`<option lang="ja">日本語</option>` in a language switch).
fn check_text(page: &mut Page, stack: &[Element], text: &str, line: usize) {
    if !in_body(stack, None) || text.trim().is_empty() || is_language_neutral(text) {
        return;
    }
    let Some(parent) = stack.last() else {
        return;
    };
    if !parent.attrs.contains_key("data-i18n") && !parent.attrs.contains_key("lang") {
        page.problems.push(format!(
            "line {line}: <{}> shows {:?} without data-i18n",
            parent.name,
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
}

// ---- Scripts -----------------------------------------------------------------------------------

/// A string literal of a script: its text (for a template, the text before its first `${`).
#[derive(Debug)]
struct JsString {
    start: usize,
    text: String,
    interpolated: bool,
}

fn is_js_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The string literals of a script, in `s` with its comments blanked out.
fn js_strings(s: &mut [char]) -> Vec<JsString> {
    let mut out = Vec::new();
    let mut i = 0;
    scan_js(s, &mut i, &mut out, false);
    out
}

/// Scans code from `i`; in an interpolation, returns after the `}` that closes it.
fn scan_js(s: &mut [char], i: &mut usize, out: &mut Vec<JsString>, interpolation: bool) {
    let mut depth = 0usize;
    let mut last: Option<char> = None;
    let mut last_word = String::new();
    while *i < s.len() {
        let c = s[*i];
        if at(s, *i, "//") {
            while *i < s.len() && s[*i] != '\n' {
                s[*i] = ' ';
                *i += 1;
            }
            continue;
        }
        if at(s, *i, "/*") {
            let end = find_from(s, *i + 2, "*/").map_or(s.len(), |end| end + 2);
            for c in &mut s[*i..end] {
                if *c != '\n' {
                    *c = ' ';
                }
            }
            *i = end;
            continue;
        }
        match c {
            '"' | '\'' => {
                let start = *i;
                *i += 1;
                let mut text = String::new();
                while *i < s.len() && s[*i] != c && s[*i] != '\n' {
                    if s[*i] == '\\' && *i + 1 < s.len() {
                        text.push(s[*i]);
                        *i += 1;
                    }
                    text.push(s[*i]);
                    *i += 1;
                }
                *i += 1;
                out.push(JsString {
                    start,
                    text,
                    interpolated: false,
                });
                last = Some(c);
            }
            '`' => {
                let start = *i;
                *i += 1;
                let mut text = String::new();
                let mut interpolated = false;
                while *i < s.len() && s[*i] != '`' {
                    if s[*i] == '\\' && *i + 1 < s.len() {
                        if !interpolated {
                            text.push(s[*i]);
                            text.push(s[*i + 1]);
                        }
                        *i += 2;
                    } else if at(s, *i, "${") {
                        interpolated = true;
                        *i += 2;
                        scan_js(s, i, out, true);
                    } else {
                        if !interpolated {
                            text.push(s[*i]);
                        }
                        *i += 1;
                    }
                }
                *i += 1;
                out.push(JsString {
                    start,
                    text,
                    interpolated,
                });
                last = Some('`');
            }
            '/' if last.is_none_or(|l| "(,=:[!&|?{};+-*%<>~^".contains(l))
                || last_word == "return" =>
            {
                // A regular expression literal.
                *i += 1;
                let mut class = false;
                while *i < s.len() && s[*i] != '\n' {
                    match s[*i] {
                        '\\' => *i += 1,
                        '[' => class = true,
                        ']' => class = false,
                        '/' if !class => break,
                        _ => {}
                    }
                    *i += 1;
                }
                *i += 1;
                last = Some('/');
            }
            '{' => {
                depth += 1;
                last = Some(c);
                *i += 1;
            }
            '}' => {
                *i += 1;
                if interpolation && depth == 0 {
                    return;
                }
                depth = depth.saturating_sub(1);
                last = Some(c);
            }
            _ => {
                if is_js_ident(c) {
                    let (word, end) = run(s, *i, is_js_ident);
                    last_word = word;
                    *i = end;
                    last = Some('a');
                    continue;
                }
                if !c.is_whitespace() {
                    last = Some(c);
                }
                *i += 1;
            }
        }
        if !c.is_whitespace() && !is_js_ident(c) {
            last_word.clear();
        }
    }
}

/// The word just before `i` (skipping spaces).
fn word_before(s: &[char], i: usize) -> String {
    let mut end = i;
    while end > 0 && s[end - 1].is_whitespace() {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && is_js_ident(s[start - 1]) {
        start -= 1;
    }
    s[start..end].iter().collect()
}

/// True when the literal at `i` is the first argument of `t(…)`.
fn is_t_argument(s: &[char], i: usize) -> bool {
    let mut k = i;
    while k > 0 && s[k - 1].is_whitespace() {
        k -= 1;
    }
    k >= 2 && s[k - 1] == '(' && s[k - 2] == 't' && (k == 2 || !is_js_ident(s[k - 3]))
}

/// What a script names.
#[derive(Debug, Default)]
struct Script {
    /// Catalogue keys it names literally.
    keys: Vec<Used>,
    /// Prefixes of the keys it builds (`cases.status.` of `t(`cases.status.${s}`)`).
    prefixes: Vec<Used>,
    /// Modules it imports, as written.
    imports: Vec<String>,
    /// The areas it loads through `requireSession({ areas })` or `initI18n([…])`; `None` when
    /// it calls neither; `Err` when they are not a list of literals.
    loads: Option<Result<Vec<String>, String>>,
}

/// Reads a script: the keys it uses (`t("…")`, and literals shaped `area.key` for the given
/// areas), the prefixes it builds keys from, its imports and the areas it loads.
fn scan_script(js: &str, areas: &BTreeSet<String>) -> Script {
    let mut s: Vec<char> = js.chars().collect();
    let strings = js_strings(&mut s);
    let mut script = Script::default();
    for string in strings {
        let word = word_before(&s, string.start);
        if !string.interpolated && (word == "from" || word == "import") {
            script.imports.push(string.text.clone());
            continue;
        }
        let in_area = areas
            .iter()
            .any(|area| string.text.starts_with(&format!("{area}.")));
        let t_argument = is_t_argument(&s, string.start);
        if !t_argument && !in_area {
            continue;
        }
        let used = Used {
            key: string.text.clone(),
            line: line_at(&s, string.start),
        };
        if t_argument {
            if string.interpolated {
                script.prefixes.push(used);
            } else {
                script.keys.push(used);
            }
        } else if in_area {
            let key_shaped = string
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
            if string.interpolated || string.text.ends_with('.') {
                script.prefixes.push(used);
            } else if key_shaped && !FILE_SUFFIXES.iter().any(|s| string.text.ends_with(s)) {
                script.keys.push(used);
            }
        }
    }
    script.loads = loaded_areas(&s);
    script
}

/// The quoted items of the list `[…]` at `i`.
fn literal_list(s: &[char], i: usize) -> Result<Vec<String>, String> {
    if i >= s.len() || s[i] != '[' {
        return Err("not a literal list".to_string());
    }
    let end = find_from(s, i, "]").ok_or("an unclosed list")?;
    let inner: String = s[i + 1..end].iter().collect();
    inner
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let quoted = item.len() >= 2
                && (item.starts_with('"') && item.ends_with('"')
                    || item.starts_with('\'') && item.ends_with('\''));
            if quoted {
                Ok(item[1..item.len() - 1].to_string())
            } else {
                Err(format!("{item} is not a literal"))
            }
        })
        .collect()
}

/// The areas of `requireSession({ …, areas: [...] })` and `initI18n([...])` calls in `s`
/// (comments blanked).
fn loaded_areas(s: &[char]) -> Option<Result<Vec<String>, String>> {
    let mut loads: Option<Result<Vec<String>, String>> = None;
    let mut add = |found: Result<Vec<String>, String>| {
        loads = Some(match (loads.take(), found) {
            (Some(Err(e)), _) | (_, Err(e)) => Err(e),
            (Some(Ok(mut all)), Ok(more)) => {
                all.extend(more);
                Ok(all)
            }
            (None, Ok(more)) => Ok(more),
        });
    };
    for (call, listed) in [("requireSession(", false), ("initI18n(", true)] {
        let mut from = 0;
        while let Some(p) = find_from(s, from, call) {
            from = p + call.len();
            if (p > 0 && is_js_ident(s[p - 1])) || word_before(s, p) == "function" {
                continue;
            }
            if listed {
                add(literal_list(s, skip_ws(s, from)));
                continue;
            }
            // The options object, to its closing parenthesis.
            let mut depth = 1usize;
            let mut end = from;
            while end < s.len() && depth > 0 {
                match s[end] {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                }
                end += 1;
            }
            let options = &s[from..end];
            let found = (0..options.len())
                .find(|&k| at(options, k, "areas") && (k == 0 || !is_js_ident(options[k - 1])));
            match found {
                None => add(Ok(Vec::new())),
                Some(k) => {
                    let colon = skip_ws(options, k + "areas".len());
                    if colon < options.len() && options[colon] == ':' {
                        add(literal_list(options, skip_ws(options, colon + 1)));
                    } else {
                        add(Err("areas is not a literal list".to_string()));
                    }
                }
            }
        }
    }
    loads
}

// ---- Rust error codes --------------------------------------------------------------------------

fn is_rust_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A Rust source with its comments blanked out (strings kept, lines kept).
fn strip_rust_comments(src: &str) -> Vec<char> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if at(&s, i, "//") {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if at(&s, i, "/*") {
            let mut depth = 0;
            while i < s.len() {
                if at(&s, i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(&s, i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if s[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        let end = rust_literal_end(&s, i);
        out.extend_from_slice(&s[i..end]);
        i = end;
    }
    out
}

/// The end of the string or character literal at `i` (raw strings included); `i + 1` when
/// none starts there.
fn rust_literal_end(s: &[char], i: usize) -> usize {
    let c = s[i];
    let boundary = i == 0 || !is_rust_ident(s[i - 1]);
    let raw_start = if c == 'r' && boundary {
        Some(i + 1)
    } else if c == 'b' && boundary && i + 1 < s.len() && s[i + 1] == 'r' {
        Some(i + 2)
    } else {
        None
    };
    if let Some(mut k) = raw_start {
        let mut hashes = 0;
        while k < s.len() && s[k] == '#' {
            hashes += 1;
            k += 1;
        }
        if k < s.len() && s[k] == '"' {
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            return find_from(s, k + 1, &close).map_or(s.len(), |end| end + close.len());
        }
    }
    match c {
        '"' => {
            let mut k = i + 1;
            while k < s.len() && s[k] != '"' {
                k += if s[k] == '\\' { 2 } else { 1 };
            }
            (k + 1).min(s.len())
        }
        '\'' if i + 1 < s.len() && s[i + 1] == '\\' => {
            let mut k = i + 3;
            while k < s.len() && s[k] != '\'' {
                k += 1;
            }
            (k + 1).min(s.len())
        }
        '\'' if i + 2 < s.len() && s[i + 2] == '\'' => i + 3,
        _ => i + 1,
    }
}

/// The comma-separated items from `i` to the `close` that ends them at depth 0, and the index
/// after it; `angles` counts `<…>` as brackets (for parameter types).
fn split_list(s: &[char], mut i: usize, close: char, angles: bool) -> Option<(Vec<String>, usize)> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    while i < s.len() {
        let c = s[i];
        if depth == 0 && c == close {
            if !current.trim().is_empty() {
                items.push(current.trim().to_string());
            }
            return Some((items, i + 1));
        }
        let end = rust_literal_end(s, i);
        if end > i + 1 {
            current.extend(&s[i..end]);
            i = end;
            continue;
        }
        let arrow = i > 0 && matches!(s[i - 1], '-' | '=');
        match c {
            '(' | '[' | '{' => depth += 1,
            '<' if angles => depth += 1,
            ')' | ']' | '}' => depth = depth.checked_sub(1)?,
            '>' if angles && !arrow => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(current.trim().to_string());
                current.clear();
                i += 1;
                continue;
            }
            _ => {}
        }
        current.push(c);
        i += 1;
    }
    None
}

/// Positions of `word` standing alone (no identifier character on either side).
fn word_positions(s: &[char], word: &str) -> Vec<usize> {
    let len = word.chars().count();
    (0..s.len())
        .filter(|&p| {
            at(s, p, word)
                && (p == 0 || !is_rust_ident(s[p - 1]))
                && (p + len >= s.len() || !is_rust_ident(s[p + len]))
        })
        .collect()
}

fn rust_ident_at(s: &[char], i: usize) -> Option<(String, usize)> {
    let (ident, end) = run(s, i, is_rust_ident);
    (!ident.is_empty()).then_some((ident, end))
}

/// The index after `&'static str` (or `&str`) at `i`, if that is what stands there.
fn after_static_str(s: &[char], i: usize) -> Option<usize> {
    if i >= s.len() || s[i] != '&' {
        return None;
    }
    let mut k = skip_ws(s, i + 1);
    if at(s, k, "'static") {
        k = skip_ws(s, k + "'static".len());
    }
    let (word, end) = rust_ident_at(s, k)?;
    (word == "str").then_some(end)
}

/// True when `ident` is bound as `ident: &'static str` somewhere in `s` (a parameter or a
/// `let`): a code passed on, or chosen by a `let` whose literals are collected on their own.
fn binds_static_str(s: &[char], ident: &str) -> bool {
    word_positions(s, ident).into_iter().any(|p| {
        let k = skip_ws(s, p + ident.chars().count());
        k + 1 < s.len()
            && s[k] == ':'
            && s[k + 1] != ':'
            && at(s, skip_ws(s, k + 1), "&'static")
            && after_static_str(s, skip_ws(s, k + 1)).is_some()
    })
}

/// The string literals right after each `=>` in `s[from..to]`.
fn literals_after_arrows(s: &[char], from: usize, to: usize) -> Vec<String> {
    let mut found = Vec::new();
    for k in from..to.min(s.len()) {
        if !at(s, k, "=>") {
            continue;
        }
        let j = skip_ws(s, k + 2);
        if j < to && s[j] == '"' {
            let end = rust_literal_end(s, j);
            found.push(s[j + 1..end.saturating_sub(1).max(j + 1)].iter().collect());
        }
    }
    found
}

/// The end (after the closing bracket) of the bracketed block opening at `i`.
fn block_end(s: &[char], i: usize) -> usize {
    let mut depth = 0usize;
    let mut k = i;
    while k < s.len() {
        let end = rust_literal_end(s, k);
        if end > k + 1 {
            k = end;
            continue;
        }
        match s[k] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
        k += 1;
    }
    s.len()
}

/// The end of the statement from `i`: its `;` (or the bracket closing what holds it).
fn statement_end(s: &[char], i: usize) -> usize {
    let mut depth = 0usize;
    let mut k = i;
    while k < s.len() {
        let end = rust_literal_end(s, k);
        if end > k + 1 {
            k = end;
            continue;
        }
        match s[k] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return k,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => return k,
            _ => {}
        }
        k += 1;
    }
    s.len()
}

/// A function or closure taking an error code (`code: &'static str`) as its `index`th argument.
struct Carrier {
    name: String,
    index: usize,
    file: usize,
    closure: bool,
}

/// True when `word` stands in `s[from..to]`.
fn mentions(s: &[char], from: usize, to: usize, word: &str) -> bool {
    let to = to.min(s.len());
    from < to && !word_positions(&s[from..to], word).is_empty()
}

fn is_code_param(param: &str) -> bool {
    let compact: String = param.chars().filter(|c| !c.is_whitespace()).collect();
    compact == "code:&'staticstr"
}

/// Every error code the sources (path, text) can answer with, each with where it is written,
/// and the arguments that could not be read as a code.
fn error_codes(sources: &[(String, String)]) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let texts: Vec<Vec<char>> = sources
        .iter()
        .map(|(_, text)| strip_rust_comments(text))
        .collect();
    let mut codes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut consts = BTreeMap::new();
    let mut carriers = Vec::new();
    for (file, s) in texts.iter().enumerate() {
        let place = |p: usize| format!("{}:{}", sources[file].0, line_at(s, p));
        // The bodies of `impl … ApiError … { … }` blocks.
        let error_impls: Vec<(usize, usize)> = word_positions(s, "impl")
            .into_iter()
            .filter_map(|p| {
                let brace = find_from(s, p, "{")?;
                mentions(s, p, brace, "ApiError").then(|| (brace, block_end(s, brace)))
            })
            .collect();
        // `const NAME: &str = "…";`
        for p in word_positions(s, "const") {
            let Some((name, k)) = rust_ident_at(s, skip_ws(s, p + 5)) else {
                continue;
            };
            let k = skip_ws(s, k);
            if k >= s.len() || s[k] != ':' {
                continue;
            }
            let Some(k) = after_static_str(s, skip_ws(s, k + 1)) else {
                continue;
            };
            let k = skip_ws(s, k);
            if k < s.len() && s[k] == '=' {
                let j = skip_ws(s, k + 1);
                if j < s.len() && s[j] == '"' {
                    let end = rust_literal_end(s, j);
                    consts.insert(name, s[j + 1..end - 1].iter().collect::<String>());
                }
            }
        }
        // `fn name(…, code: &'static str, …)`, and `fn …code…(…) -> &'static str { … }`.
        for p in word_positions(s, "fn") {
            let Some((name, k)) = rust_ident_at(s, skip_ws(s, p + 2)) else {
                continue;
            };
            let mut k = skip_ws(s, k);
            if k < s.len() && s[k] == '<' {
                k = block_end_angles(s, k);
                k = skip_ws(s, k);
            }
            if k >= s.len() || s[k] != '(' {
                continue;
            }
            let Some((params, after)) = split_list(s, k + 1, ')', true) else {
                continue;
            };
            // Only what builds an API error carries its code: a method of `ApiError`, or a
            // function whose body names it.
            let body =
                find_from(s, after, "{").filter(|&b| find_from(&s[after..b], 0, ";").is_none());
            let builds_error = error_impls.iter().any(|&(from, to)| from < p && p < to)
                || body.is_some_and(|b| mentions(s, b, block_end(s, b), "ApiError"));
            for (index, param) in params.iter().enumerate() {
                if builds_error && is_code_param(param) {
                    carriers.push(Carrier {
                        name: name.clone(),
                        index,
                        file,
                        closure: false,
                    });
                }
            }
            let arrow = skip_ws(s, after);
            if name.contains("code")
                && at(s, arrow, "->")
                && let Some(body) = after_static_str(s, skip_ws(s, arrow + 2))
            {
                let body = skip_ws(s, body);
                if body < s.len() && s[body] == '{' {
                    for code in literals_after_arrows(s, body, block_end(s, body)) {
                        codes.entry(code).or_default().push(place(p));
                    }
                }
            }
        }
        // `let name = |…, code: &'static str, …|`, and `let code: &'static str = …;`.
        for p in word_positions(s, "let") {
            let Some((name, k)) = rust_ident_at(s, skip_ws(s, p + 3)) else {
                continue;
            };
            let k = skip_ws(s, k);
            if k + 1 < s.len() && s[k] == ':' && s[k + 1] != ':' {
                let Some(k) = after_static_str(s, skip_ws(s, k + 1)) else {
                    continue;
                };
                let k = skip_ws(s, k);
                if k < s.len() && s[k] == '=' {
                    for code in literals_after_arrows(s, k, statement_end(s, k + 1)) {
                        codes.entry(code).or_default().push(place(p));
                    }
                }
                continue;
            }
            if k >= s.len() || s[k] != '=' || at(s, k, "==") {
                continue;
            }
            let mut k = skip_ws(s, k + 1);
            if at(s, k, "move") {
                k = skip_ws(s, k + 4);
            }
            if k >= s.len() || s[k] != '|' {
                continue;
            }
            let Some((params, after)) = split_list(s, k + 1, '|', true) else {
                continue;
            };
            let builds_error = mentions(s, after, statement_end(s, after), "ApiError");
            for (index, param) in params.iter().enumerate() {
                if builds_error && is_code_param(param) {
                    carriers.push(Carrier {
                        name: name.clone(),
                        index,
                        file,
                        closure: true,
                    });
                }
            }
        }
    }
    for carrier in &carriers {
        for (file, s) in texts.iter().enumerate() {
            if carrier.closure && file != carrier.file {
                continue;
            }
            let len = carrier.name.chars().count();
            for p in word_positions(s, &carrier.name) {
                if p + len >= s.len() || s[p + len] != '(' || defines(s, p) {
                    continue;
                }
                // `new` is every type's constructor: only `ApiError::new`, or `Self::new` where
                // it is defined, builds an error.
                let qualifier = qualifier_before(s, p);
                if carrier.name == "new"
                    && qualifier.as_deref() != Some("ApiError")
                    && !(qualifier.as_deref() == Some("Self") && file == carrier.file)
                {
                    continue;
                }
                let place = format!("{}:{}", sources[file].0, line_at(s, p));
                let Some((args, _)) = split_list(s, p + len + 1, ')', false) else {
                    problems.push(format!("{place}: unreadable call of {}", carrier.name));
                    continue;
                };
                let Some(arg) = args.get(carrier.index) else {
                    problems.push(format!("{place}: {} without a code", carrier.name));
                    continue;
                };
                let literal = arg.len() >= 2
                    && arg.starts_with('"')
                    && arg.ends_with('"')
                    && !arg[1..arg.len() - 1].contains('"');
                let constant = arg.starts_with(|c: char| c.is_ascii_uppercase())
                    && arg
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                let variable = arg.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && arg.chars().all(is_rust_ident);
                if literal {
                    codes
                        .entry(arg[1..arg.len() - 1].to_string())
                        .or_default()
                        .push(place);
                } else if constant && consts.contains_key(arg) {
                    codes.entry(consts[arg].clone()).or_default().push(place);
                } else if variable && binds_static_str(s, arg) {
                    // Passed on from a parameter or a `let` collected above.
                } else {
                    problems.push(format!(
                        "{place}: cannot tell which error code {arg:?} is (use a literal, a \
                         const or a `code: &'static str` binding)"
                    ));
                }
            }
        }
    }
    (codes, problems)
}

/// The end of the `<…>` generics at `i`.
fn block_end_angles(s: &[char], i: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in s.iter().enumerate().skip(i) {
        match c {
            '<' => depth += 1,
            '>' if s[k - 1] != '-' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// True when the name at `p` is being defined (`fn name(`), not called.
fn defines(s: &[char], p: usize) -> bool {
    let mut k = p;
    while k > 0 && s[k - 1].is_whitespace() {
        k -= 1;
    }
    k >= 2 && s[k - 2] == 'f' && s[k - 1] == 'n' && (k == 2 || !is_rust_ident(s[k - 3]))
}

/// `Type` of `Type::name` at `p`.
fn qualifier_before(s: &[char], p: usize) -> Option<String> {
    if p < 2 || s[p - 1] != ':' || s[p - 2] != ':' {
        return None;
    }
    let end = p - 2;
    let mut start = end;
    while start > 0 && is_rust_ident(s[start - 1]) {
        start -= 1;
    }
    Some(s[start..end].iter().collect())
}

/// The sources of the crates that answer the API, as (path, text).
fn api_sources() -> Vec<(String, String)> {
    API_CRATES
        .iter()
        .flat_map(|krate| files(&root().join(krate).join("src"), ".rs", true))
        .map(|path| (shown(&path), read(&path)))
        .collect()
}

// ---- Tests -------------------------------------------------------------------------------------

#[test]
fn catalogues_are_complete_in_japanese_and_english() {
    let catalogue = Catalogue::load();
    assert!(
        catalogue.keys.len() > 50,
        "too few keys: {}",
        catalogue.keys.len()
    );
    assert_none("the catalogues", &catalogue.problems);
}

#[test]
fn pages_and_scripts_name_only_keys_they_load() {
    let catalogue = Catalogue::load();
    let mut problems = Vec::new();
    let scripts: BTreeMap<PathBuf, Script> = files(&web_static(), ".js", true)
        .into_iter()
        .map(|path| {
            let script = scan_script(&read(&path), &catalogue.areas);
            (path, script)
        })
        .collect();
    for (path, script) in &scripts {
        for used in &script.keys {
            if !catalogue.keys.contains_key(&used.key) {
                problems.push(format!(
                    "{}:{}: key {:?} is in no catalogue",
                    shown(path),
                    used.line,
                    used.key
                ));
            }
        }
        for used in &script.prefixes {
            let area = used.key.split('.').next().unwrap_or_default();
            if !used.key.contains('.') || !catalogue.areas.contains(area) {
                problems.push(format!(
                    "{}:{}: a key built from {:?} names no area (write t(`area.prefix.${{…}}`))",
                    shown(path),
                    used.line,
                    used.key
                ));
            } else if !catalogue.has_prefix(&used.key) {
                problems.push(format!(
                    "{}:{}: no key starts with {:?}: list the whole family in the catalogue",
                    shown(path),
                    used.line,
                    used.key
                ));
            }
        }
    }
    // The pages are translated: a scan that finds few keys is broken, not lucky.
    let named: usize = scripts.values().map(|s| s.keys.len()).sum();
    assert!(named > 50, "the scripts name only {named} keys");
    let app = web_static().join("app.js");
    let pages = files(&web_static(), ".html", false);
    assert!(!pages.is_empty(), "no pages in web/static");
    let mut page_keys = 0;
    for page_path in &pages {
        let page_name = shown(page_path);
        let page = scan_page(&read(page_path));
        page_keys += page.keys.len();
        for used in &page.keys {
            if !catalogue.keys.contains_key(&used.key) {
                problems.push(format!(
                    "{page_name}:{}: key {:?} is in no catalogue",
                    used.line, used.key
                ));
            }
        }
        // The page's own modules and what they import, but the shared app.js.
        let mut modules = BTreeSet::new();
        let mut pending: Vec<PathBuf> = page
            .scripts
            .iter()
            .filter_map(|src| src.strip_prefix("/static/"))
            .map(|name| web_static().join(name))
            .collect();
        while let Some(module) = pending.pop() {
            if module == app || !modules.insert(module.clone()) {
                continue;
            }
            let Some(script) = scripts.get(&module) else {
                problems.push(format!(
                    "{page_name}: loads {}, which is missing",
                    shown(&module)
                ));
                continue;
            };
            for import in &script.imports {
                if let Some(name) = import.strip_prefix("/static/") {
                    pending.push(web_static().join(name));
                } else if let Some(name) = import.strip_prefix("./") {
                    pending.push(module.parent().unwrap_or(&web_static()).join(name));
                }
            }
        }
        let mut loaded: Option<BTreeSet<String>> = None;
        for module in &modules {
            match &scripts[module].loads {
                None => {}
                Some(Err(e)) => problems.push(format!("{}: {e}", shown(module))),
                Some(Ok(areas)) => loaded
                    .get_or_insert_with(BTreeSet::new)
                    .extend(areas.iter().cloned()),
            }
        }
        let Some(mut loaded) = loaded else {
            problems.push(format!(
                "{page_name}: none of its scripts loads catalogues (requireSession({{ areas }}) \
                 or initI18n([...]))"
            ));
            continue;
        };
        for area in &loaded {
            if !catalogue.areas.contains(area) {
                problems.push(format!(
                    "{page_name}: loads area {area:?}, which has no catalogue"
                ));
            }
        }
        loaded.extend(ALWAYS_LOADED.iter().map(|a| a.to_string()));
        let mut used: Vec<(String, &Used)> =
            page.keys.iter().map(|u| (page_name.clone(), u)).collect();
        for module in &modules {
            let script = &scripts[module];
            used.extend(
                script
                    .keys
                    .iter()
                    .chain(&script.prefixes)
                    .map(|u| (shown(module), u)),
            );
        }
        for (file, u) in used {
            let area = catalogue
                .keys
                .get(&u.key)
                .cloned()
                .unwrap_or_else(|| u.key.split('.').next().unwrap_or_default().to_string());
            if !loaded.contains(&area) {
                problems.push(format!(
                    "{file}:{}: {:?} is in area {area:?}, which {page_name} does not load",
                    u.line, u.key
                ));
            }
        }
    }
    assert!(page_keys > 50, "the pages name only {page_keys} keys");
    assert_none("keys used by the pages", &problems);
}

#[test]
fn every_api_error_code_is_translated() {
    let catalogue = Catalogue::load();
    let (codes, mut problems) = error_codes(&api_sources());
    // The scanner itself must find the codes every part of the API uses.
    for known in [
        "not_found",
        "forbidden",
        "unauthenticated",
        "internal",
        "invalid",
        "bad_body",
        "conflict",
        "invalid_transition",
        "upload_busy",
        "ai_for_diagnosing_pathologists",
    ] {
        assert!(
            codes.contains_key(known),
            "the scan missed {known}: {codes:?}"
        );
    }
    for (code, places) in &codes {
        if !catalogue.keys.contains_key(&format!("errors.{code}")) {
            problems.push(format!(
                "errors.{code} is missing from web/static/i18n/errors.json (answered at {})",
                places.join(", ")
            ));
        }
    }
    assert_none("API error codes", &problems);
}

#[test]
fn pages_show_no_untranslated_text() {
    let mut problems = Vec::new();
    for path in files(&web_static(), ".html", false) {
        let page = scan_page(&read(&path));
        if !page.has_lang {
            problems.push(format!("{}: <html> has no lang", shown(&path)));
        }
        problems.extend(
            page.problems
                .iter()
                .map(|p| format!("{}: {p}", shown(&path))),
        );
    }
    assert_none("untranslated text", &problems);
}

/// The checks above pass only if they can fail: each finds what it looks for in small samples.
#[test]
fn the_checks_catch_what_they_look_for() {
    // Catalogues.
    let mut catalogue = Catalogue::default();
    let problems = catalogue.add(
        "cases",
        r#"{
            "cases.title": { "en": "Cases", "ja": "症例" },
            "cases.count": { "en": "{n} cases", "ja": "{count}件" },
            "cases.units": { "en": "{n} µm", "ja": "{n} µm" },
            "cases.english": { "en": "Organ", "ja": "Organ" },
            "case.other_area": { "en": "Other", "ja": "その他" },
            "cases.no_ja": { "en": "Only English" },
            "cases.french": { "en": "Yes", "ja": "はい", "fr": "Oui" },
            "cases.title": { "en": "Cases", "ja": "症例" }
        }"#,
    );
    let joined = problems.join("\n");
    for expected in [
        "cases.count: placeholders differ",
        "cases.english: the ja text \"Organ\" has no Japanese",
        "case.other_area: not a key of this area",
        "cases.no_ja: no ja text",
        "cases.french: language \"fr\"",
        "cases.title: written 2 times",
    ] {
        assert!(joined.contains(expected), "{expected} not in:\n{joined}");
    }
    assert!(!joined.contains("cases.units"), "{joined}");
    assert!(is_language_neutral("{model} · pathfed"));
    assert!(is_language_neutral("AUROC（%）"));
    assert!(!is_language_neutral("Slides"));
    assert!(!is_language_neutral("スライド"));

    // Pages.
    let page = scan_page(
        r#"<!doctype html>
<html><head><title>Cases</title><script type="module" src="/static/cases.js"></script></head>
<body>
  <header><span class="brand">pathfed</span> &times; 2</header>
  <h1 data-i18n="cases.title">Cases</h1>
  <label>Status <select><option value="">any</option></select></label>
  <p data-i18n="cases.intro">Read <b>this</b></p>
  <input placeholder="e.g. stomach"><input placeholder="12" data-i18n-title="cases.x">
  <div aria-label="Slides" data-i18n-aria-label="cases.slides"></div>
  <span data-i18n-alt="cases.alt"></span>
  <script>const hidden = "not text";</script>
</body></html>"#,
    );
    let joined = page.problems.join("\n");
    assert!(!page.has_lang);
    assert_eq!(page.scripts, ["/static/cases.js"]);
    let keys: Vec<&str> = page.keys.iter().map(|u| u.key.as_str()).collect();
    for key in ["cases.title", "cases.intro", "cases.x", "cases.slides"] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
    for expected in [
        "<label> shows \"Status\"",
        "<option> shows \"any\"",
        "<p> has data-i18n and holds elements",
        "<b> shows \"this\"",
        "placeholder=\"e.g. stomach\" has no data-i18n-placeholder",
        "data-i18n-alt is not an attribute",
    ] {
        assert!(joined.contains(expected), "{expected} not in:\n{joined}");
    }
    for absent in ["pathfed", "Cases", "Slides", "not text", "\"12\""] {
        assert!(!joined.contains(absent), "{absent} in:\n{joined}");
    }

    // Scripts.
    let areas: BTreeSet<String> = ["cases", "common"].iter().map(|a| a.to_string()).collect();
    let script = scan_script(
        r#"import { t, requireSession } from "/static/app.js";
import { helper } from "./reading-tools.js";
// t("cases.in_a_comment") and the user's words
const session = await requireSession({ active: "cases", areas: ["cases", 'opt-out'] });
const n = items.length / 2; const re = /["'`]/g;
title.textContent = t("cases.title", { n });
cell.textContent = t(`common.status.${item.status}`);
const LINKS = [{ key: "common.nav.cases" }, { file: "cases.html" }];
const text = `${t('cases.count')} of ${n}`;
"#,
        &areas,
    );
    let keys: Vec<&str> = script.keys.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["cases.title", "common.nav.cases", "cases.count"]);
    let prefixes: Vec<&str> = script.prefixes.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(prefixes, ["common.status."]);
    assert_eq!(script.imports, ["/static/app.js", "./reading-tools.js"]);
    assert_eq!(
        script.loads.unwrap().unwrap(),
        ["cases".to_string(), "opt-out".to_string()]
    );
    let login = scan_script("await initI18n([\"login\"]);", &areas);
    assert_eq!(login.loads.unwrap().unwrap(), ["login".to_string()]);
    let dynamic = scan_script("requireSession({ areas: AREAS });", &areas);
    assert!(dynamic.loads.unwrap().is_err());
    assert!(scan_script("t(\"cases.x\");", &areas).loads.is_none());

    // Rust error codes.
    let sources = [
        (
            "http.rs".to_string(),
            r#"
impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "alpha", format!("{what} (not found)"))
    }
}
fn error_code(status: StatusCode) -> &'static str {
    match status { StatusCode::CONFLICT => "beta", _ => "gamma" }
}
"#
            .to_string(),
        ),
        (
            "api.rs".to_string(),
            r#"
const REFUSED: &str = "delta";
// ApiError::new(StatusCode::GONE, "in_a_comment", "…")
fn handler() {
    let x = ApiError::bad_request("epsilon", format!("a, b ({})", ')'));
    let y = ApiError::new(StatusCode::FORBIDDEN, REFUSED, "no");
    let code: &'static str = match failure.as_str() { "raw" => "zeta", _ => "eta" };
    let z = ApiError::new(StatusCode::GONE, code, "gone");
    let refuse = |status: StatusCode, code: &'static str, message: String| async move {
        Err(ApiError::new(status, code, message))
    };
    refuse(StatusCode::CONFLICT, "theta", "busy".into());
    let other = Thing::new(1, "not_a_code", 2);
    let bad = ApiError::new(StatusCode::GONE, pick(), "?");
    let shown = label("not_an_error");
}
fn label(code: &'static str) -> String {
    code.to_string()
}
"#
            .to_string(),
        ),
    ];
    let (codes, problems) = error_codes(&sources);
    let found: Vec<&str> = codes.keys().map(String::as_str).collect();
    assert_eq!(
        found,
        [
            "alpha", "beta", "delta", "epsilon", "eta", "gamma", "theta", "zeta"
        ]
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("pick()"), "{problems:?}");
}

/// Everyone signed in reads the organ list in both languages; clinical staff read the hubs their
/// hospital may send to, its default marked; an organ typed in Japanese picks the taxonomy of its
/// code, and the taxonomies carry their labels in both languages.
#[tokio::test(flavor = "multi_thread")]
async fn forms_list_organs_and_hubs_in_both_languages() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let spoke = who("Spoke A", "spoke", "sub_a", "submitter");
        let hub_pathologist = who("Hub H", "hub", "path_h", "pathologist");
        let researcher = who("Hub H", "hub", "res_h", "researcher");
        who("Hub K", "hub", "path_k", "pathologist");
        server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);

        for user in [&spoke, &researcher] {
            let answer = user.ok(Method::GET, "/api/v1/organs", None).await;
            let organs = answer["organs"].as_array().unwrap();
            assert!(organs.len() > 20, "{answer}");
            let stomach = organs.iter().find(|o| o["code"] == "stomach").unwrap();
            assert_eq!(stomach["ja"], "胃", "{stomach}");
            assert_eq!(stomach["en"], "Stomach", "{stomach}");
            for organ in organs {
                let ja = organ["ja"].as_str().unwrap_or_default();
                assert!(ja.chars().any(is_japanese), "{organ}");
                assert!(
                    !organ["en"].as_str().unwrap_or_default().is_empty(),
                    "{organ}"
                );
            }
        }

        let hubs = |answer: Value| -> Vec<(String, bool)> {
            answer["hubs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    let name = h["name"].as_str().unwrap().to_string();
                    (name, h["default"].as_bool().unwrap())
                })
                .collect()
        };
        let from_spoke = spoke.ok(Method::GET, "/api/v1/hubs", None).await;
        assert_eq!(
            hubs(from_spoke),
            [("Hub H".to_string(), true), ("Hub K".to_string(), false)]
        );
        // A hub may send to other hubs, never to itself; it has no default hub.
        let from_hub = hub_pathologist.ok(Method::GET, "/api/v1/hubs", None).await;
        assert_eq!(hubs(from_hub), [("Hub K".to_string(), false)]);
        researcher
            .refused(Method::GET, "/api/v1/hubs", None, 403)
            .await;

        // The organ stays as typed; the case uses the stomach's taxonomy.
        let draft = spoke
            .ok(
                Method::POST,
                "/api/v1/cases",
                Some(json!({
                    "patient_id": "I18N-1", "age_band": "60-69", "sex": "female",
                    "organ": "胃", "specimen": "胃生検（前庭部）",
                    "clinical_question": "腺腫か癌か",
                })),
            )
            .await;
        assert_eq!(draft["organ"], "胃", "{draft}");
        assert_eq!(draft["taxonomy"], "gastric-group", "{draft}");
        let answer = spoke.ok(Method::GET, "/api/v1/taxonomies", None).await;
        let gastric = &answer["taxonomies"]["gastric-group"];
        assert_eq!(gastric["name_ja"], "胃生検 Group 分類", "{gastric}");
        assert_eq!(gastric["labels"][4]["code"], "GAS-G5", "{gastric}");
        assert_eq!(
            gastric["labels"][4]["label_ja"], "Group 5（癌）",
            "{gastric}"
        );
        assert_eq!(
            gastric["labels"][4]["label_en"], "Group 5: carcinoma",
            "{gastric}"
        );
    }
}
