//! "Did you mean ...?": the nearest of a set of known words to a misspelt one.
//!
//! Used for unknown keys, unknown dependencies, signals and event kinds. A suggestion is
//! only made when the words are close enough that it is likely what was meant.

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&word_lower, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|&(distance, candidate)| {
            // One edit for short words, up to a third of the longer word beyond that.
            let longest = word.chars().count().max(candidate.chars().count());
            distance > 0 && distance <= (longest / 3).max(1) || distance == 0 && word != candidate
        })
        .min_by_key(|&(distance, candidate)| (distance, candidate))
        .map(|(_, candidate)| candidate)
}

/// Up to `count` candidates, nearest to `word` first, however far: for listing what
/// there is ("the nearest models are ...") rather than guessing a typo.
pub fn nearest_few<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    count: usize,
) -> Vec<&'a str> {
    let word_lower = word.to_lowercase();
    let mut ranked: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|candidate| {
            let similarity = strsim::jaro_winkler(&word_lower, &candidate.to_lowercase());
            (-similarity, candidate)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(count).map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::{nearest, nearest_few};

    #[test]
    fn lists_the_nearest_first() {
        let models = ["llama3-8b", "llama3", "qwen2.5-7b", "mistral"];
        assert_eq!(nearest_few("llama-3", models, 2), ["llama3", "llama3-8b"]);
        assert_eq!(nearest_few("x", ["a"], 3), ["a"]);
        assert!(nearest_few("x", [], 3).is_empty());
    }

    #[test]
    fn suggests_close_words_only() {
        let keys = ["command", "cwd", "env", "depends-on"];
        assert_eq!(nearest("comand", keys), Some("command"));
        assert_eq!(nearest("depends_on", keys), Some("depends-on"));
        assert_eq!(nearest("dependson", keys), Some("depends-on"));
        assert_eq!(nearest("Command", keys), Some("command"));
        assert_eq!(nearest("xyz", keys), None);
        assert_eq!(
            nearest("command", keys),
            None,
            "an exact match is not a suggestion"
        );
        assert_eq!(nearest("dbb", ["db", "api"]), Some("db"));
        assert_eq!(nearest("db", ["api"]), None);
    }
}
