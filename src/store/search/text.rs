//! What a query term matches in a text, exactly, and the tokens an index
//! keeps so that it can find the candidates fast.
//!
//! The rule every backend answers by (`matches`): text and query are
//! case-folded (Unicode lower case, any language, no stemming); a term
//! matches where it occurs at the *start of a word* — the text's start, or
//! after a character that is not part of a word (letters, digits and
//! combining marks are), or anywhere in scripts written without spaces
//! (Han, kana, Thai, …) — and runs on as far as it likes: `go` finds
//! "go", "go-live", "going" but not "ago"; `example.com` finds
//! "https://example.com/a?b=1"; `v2.pdf` finds "report_v2.pdf". A term
//! that starts with a non-word character (`?b=1`, `#42`) matches anywhere.
//! A message matches when every term does.
//!
//! Indexes find candidates by [`tokens`] (maximal runs of word characters,
//! one token per character of a script without spaces), then keep only
//! what [`matches`] confirms, so results are exact whatever the index
//! over-reports. A term's tokens: every one but the last is a whole word of
//! the text; the last is the start of one (see [`QueryTerm`]).

use icu_properties::CodePointMapData;
use icu_properties::props::GeneralCategory;

/// Tokens are cut to this many characters (index and query alike).
pub const MAX_TOKEN_CHARS: usize = 64;
/// Prefix tokens ([`prefixes`]) are at most this long; a longer word start
/// is looked up by its first this-many characters.
pub const MAX_PREFIX_CHARS: usize = 12;

/// Whether `c` is part of a word: a letter, a digit or a combining mark.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(
            CodePointMapData::<GeneralCategory>::new().get(c),
            GeneralCategory::NonspacingMark | GeneralCategory::SpacingMark | GeneralCategory::EnclosingMark
        )
}

/// Whether `c` belongs to a script written without spaces between words,
/// where every character may start a word.
pub fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width Katakana
        | 0x20000..=0x3FFFF) // CJK extensions B…
}

/// Case-folds `text` (Unicode lower case).
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// The tokens of an already folded text, in order (repeats kept).
pub fn tokens(folded: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(cut(word, MAX_TOKEN_CHARS).to_string());
            word.clear();
        }
    };
    for c in folded.chars() {
        if is_unspaced(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
        } else if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Every start of every token (1 to [`MAX_PREFIX_CHARS`] characters),
/// deduplicated: what a word-start lookup finds a token by.
pub fn prefixes(tokens: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in tokens {
        let mut end = 0;
        for (count, c) in token.chars().enumerate() {
            if count == MAX_PREFIX_CHARS {
                break;
            }
            end += c.len_utf8();
            out.push(token[..end].to_string());
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The first `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at])
}

/// One term of a query, folded, with the tokens an index looks it up by
/// (all of them but [`URL_BOILERPLATE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTerm {
    /// The term, case-folded: what [`matches`] looks for.
    pub folded: String,
    /// Whole words the text must hold (all the term's tokens but the last).
    pub words: Vec<String>,
    /// The start of a word the text must hold (the last token, cut to
    /// [`MAX_PREFIX_CHARS`]); `None` when the term has no token at all
    /// (only punctuation): then only [`matches`] decides.
    pub prefix: Option<String>,
    /// Whether the term must start at a word start (it starts with a word
    /// character).
    word_start: bool,
}

/// Parts of nearly every URL: looked up they would only slow an index
/// down, so a term with other tokens is looked up without them (they are
/// still matched, exactly, by [`matches`]).
const URL_BOILERPLATE: [&str; 7] = ["http", "https", "www", "com", "org", "net", "io"];

impl QueryTerm {
    pub fn new(raw: &str) -> Self {
        let folded = fold(raw);
        let mut words = tokens(&folded);
        let prefix = words.pop().map(|last| cut(&last, MAX_PREFIX_CHARS).to_string());
        if prefix.is_some() || words.len() > 1 {
            let telling: Vec<String> = words.iter().filter(|w| !URL_BOILERPLATE.contains(&w.as_str())).cloned().collect();
            if !telling.is_empty() || prefix.is_some() {
                words = telling;
            }
        }
        let word_start = folded.chars().next().is_some_and(is_word_char);
        Self { folded, words, prefix, word_start }
    }
}

/// The terms of a query: split at white space, a `"quoted phrase"` kept
/// as one term; repeats dropped.
pub fn parse_terms(query: &str) -> Vec<QueryTerm> {
    let mut raw: Vec<String> = Vec::new();
    for (i, part) in query.split('"').enumerate() {
        if i % 2 == 1 {
            let phrase = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if !phrase.is_empty() {
                raw.push(phrase);
            }
        } else {
            raw.extend(part.split_whitespace().map(str::to_string));
        }
    }
    let mut terms: Vec<QueryTerm> = Vec::new();
    for term in raw.iter().map(|r| QueryTerm::new(r)) {
        if !terms.iter().any(|t| t.folded == term.folded) {
            terms.push(term);
        }
    }
    terms
}

/// `text` case-folded, with where each of its characters starts in the
/// folding and in the original's UTF-16 code units.
struct FoldedText {
    folded: String,
    /// (byte offset in `folded`, UTF-16 offset in the original) at every
    /// original character's start, and at the end.
    bounds: Vec<(usize, u32)>,
}

impl FoldedText {
    fn new(text: &str) -> Self {
        let mut folded = String::with_capacity(text.len());
        let mut bounds = Vec::with_capacity(text.len() + 1);
        let mut utf16 = 0u32;
        for c in text.chars() {
            bounds.push((folded.len(), utf16));
            folded.extend(c.to_lowercase());
            utf16 += c.len_utf16() as u32;
        }
        bounds.push((folded.len(), utf16));
        Self { folded, bounds }
    }

    /// The UTF-16 offset of the original character that starts at folded
    /// byte `at`, if one does.
    fn utf16_at(&self, at: usize) -> Option<u32> {
        self.bounds.binary_search_by_key(&at, |b| b.0).ok().map(|i| self.bounds[i].1)
    }

    /// The UTF-16 offset of the end of the original character whose
    /// folding covers folded byte `at - 1` (the end of a match).
    fn utf16_end(&self, at: usize) -> u32 {
        let i = self.bounds.partition_point(|b| b.0 < at);
        self.bounds.get(i).map_or(self.bounds.last().map_or(0, |b| b.1), |b| b.1)
    }

    /// Whether a word may start at folded byte `at`.
    fn is_word_start(&self, at: usize) -> bool {
        let Some(prev) = self.folded[..at].chars().next_back() else { return true };
        let here = self.folded[at..].chars().next();
        !is_word_char(prev) || is_unspaced(prev) || here.is_some_and(is_unspaced)
    }
}

/// Where every term matches in `text`, as UTF-16 `[start, end)` ranges,
/// sorted and merged where they overlap or touch; `None` unless every
/// term matches at least once.
pub fn matches(text: &str, terms: &[QueryTerm]) -> Option<Vec<[u32; 2]>> {
    if terms.is_empty() {
        return None;
    }
    let folded = FoldedText::new(text);
    let mut ranges: Vec<[u32; 2]> = Vec::new();
    for term in terms {
        let found = occurrences(&folded, term);
        if found.is_empty() {
            return None;
        }
        ranges.extend(found);
    }
    ranges.sort_unstable();
    let mut merged: Vec<[u32; 2]> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range[0] <= last[1] => last[1] = last[1].max(range[1]),
            _ => merged.push(range),
        }
    }
    Some(merged)
}

/// The places `term` matches in `text` (not overlapping), as UTF-16 ranges.
fn occurrences(text: &FoldedText, term: &QueryTerm) -> Vec<[u32; 2]> {
    let needle = term.folded.as_str();
    let mut found = Vec::new();
    let mut from = 0;
    if needle.is_empty() {
        return found;
    }
    while let Some(offset) = text.folded[from..].find(needle) {
        let at = from + offset;
        let start = text.utf16_at(at);
        match start {
            Some(start) if !term.word_start || text.is_word_start(at) => {
                found.push([start, text.utf16_end(at + needle.len())]);
                from = at + needle.len();
            }
            _ => from = at + text.folded[at..].chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(text: &str, query: &str) -> Option<Vec<[u32; 2]>> {
        matches(text, &parse_terms(query))
    }

    #[test]
    fn terms_match_at_word_starts_case_insensitively() {
        assert_eq!(hits("Let's go live", "GO"), Some(vec![[6, 8]]));
        assert_eq!(hits("going home", "go"), Some(vec![[0, 2]]));
        assert_eq!(hits("cargo ago", "go"), None);
        assert_eq!(hits("QA team: qa", "qa"), Some(vec![[0, 2], [9, 11]]));
        assert_eq!(hits("aqua", "qa"), None);
    }

    #[test]
    fn urls_ids_and_file_names_match_whole_or_in_parts() {
        let url = "see https://example.com/a?b=1 now";
        for part in ["https://example.com/a?b=1", "example.com", "example", "a?b=1", "?b=1", "b=1", "com/a"] {
            assert!(hits(url, part).is_some(), "{part}");
        }
        assert_eq!(hits(url, "xample"), None);
        assert_eq!(hits("fix ABC-123 today", "abc-123"), Some(vec![[4, 11]]));
        assert!(hits("fix ABC-123 today", "123").is_some());
        assert!(hits("fix ABC-1234", "ABC-123").is_some(), "a prefix of the id");
        assert!(hits("see report_v2.pdf", "report_v2.pdf").is_some());
        assert!(hits("see report_v2.pdf", "v2.pdf").is_some());
        assert!(hits("see report_v2.pdf", "pdf").is_some());
        assert_eq!(hits("see report_v2.pdf", "port"), None);
    }

    #[test]
    fn any_language_matches_and_highlights_in_utf16() {
        assert_eq!(hits("Встреча в Москве", "москве"), Some(vec![[10, 16]]));
        assert_eq!(hits("Café CRÈME", "crème"), Some(vec![[5, 10]]));
        assert_eq!(hits("今日は東京に行きます", "東京"), Some(vec![[3, 5]]));
        assert_eq!(hits("🙂 Zoë says hi", "zoë"), Some(vec![[3, 6]]));
        assert_eq!(hits("नमस्ते दुनिया", "दुनिया"), Some(vec![[7, 13]]));
        assert_eq!(hits("हिन्दी", "न्दी"), None, "inside a word, past a virama");
    }

    #[test]
    fn every_term_must_match_and_quotes_keep_a_phrase() {
        assert!(hits("deploy the go service", "go deploy").is_some());
        assert_eq!(hits("deploy the service", "go deploy"), None);
        assert_eq!(hits("go deploy", "\"deploy go\""), None);
        assert_eq!(hits("we go   deploy", "\"go deploy\""), None, "a phrase is matched as typed, single-spaced");
        assert_eq!(hits("we go deploy", "\"go deploy\""), Some(vec![[3, 12]]));
    }

    #[test]
    fn tokens_and_prefixes_are_what_a_term_is_looked_up_by() {
        assert_eq!(tokens(&fold("https://Example.com/a?b=1")), ["https", "example", "com", "a", "b", "1"]);
        assert_eq!(tokens("東京タワー x"), ["東", "京", "タ", "ワ", "ー", "x"]);
        let url = QueryTerm::new("https://www.github.com/deploy");
        assert_eq!((url.words, url.prefix), (vec!["github".to_string()], Some("deploy".to_string())), "URL boilerplate is not looked up");
        let term = QueryTerm::new("ABC-123");
        assert_eq!((term.words.clone(), term.prefix.clone()), (vec!["abc".to_string()], Some("123".to_string())));
        assert_eq!(QueryTerm::new("?!").prefix, None);
        assert_eq!(prefixes(&["goal".to_string(), "go".to_string()]), ["g", "go", "goa", "goal"]);
    }
}
