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

#[cfg(test)]
mod tests {
    use super::nearest;

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
