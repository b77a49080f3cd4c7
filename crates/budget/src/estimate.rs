//! Estimating a request's input tokens before it is sent, for reservations.

/// Estimates the tokens of a text. Plug in a real tokenizer by implementing it.
pub trait TokenEstimator {
    /// Tokens in `text`.
    fn estimate(&self, text: &str) -> u64;

    /// Tokens in a chat: each message's content plus a per-message overhead
    /// for the role and separators (4 tokens, the figure `OpenAI` documents), plus
    /// 3 tokens that prime the reply.
    fn estimate_chat<'a>(&self, contents: impl IntoIterator<Item = &'a str>) -> u64
    where
        Self: Sized,
    {
        contents
            .into_iter()
            .map(|c| self.estimate(c) + 4)
            .sum::<u64>()
            + 3
    }
}

/// The built-in estimator: about 4 characters a token for Latin script
/// (ASCII, accented Latin, Vietnamese), one token a character for Thai, CJK
/// and every other script. Deliberately errs high for non-Latin text, whose
/// real tokenizers spend about a token a character.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CharEstimator;

/// Whether a character tokenizes like Latin script (about 4 to a token).
fn latin_like(c: char) -> bool {
    matches!(c,
        '\u{0000}'..='\u{024F}'     // ASCII, Latin-1, Latin Extended-A and -B
        | '\u{0300}'..='\u{036F}'   // combining diacritics
        | '\u{1E00}'..='\u{1EFF}'   // Latin Extended Additional (Vietnamese)
        | '\u{2000}'..='\u{206F}'   // general punctuation
    )
}

/// [`CharEstimator`]'s count of a text that arrives in pieces (the runs
/// and escapes of a JSON string read where it lies): add each piece, then
/// read the [`tokens`](Self::tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CharCount {
    latin: u64,
    other: u64,
}

impl CharCount {
    /// Counts the characters of `text`.
    pub fn add_str(&mut self, text: &str) {
        if text.is_ascii() {
            self.latin += text.len() as u64;
            return;
        }
        text.chars().for_each(|c| self.add_char(c));
    }

    /// Counts `n` characters known to be ASCII (a text's length, when it
    /// is all ASCII).
    pub fn add_latin(&mut self, n: u64) {
        self.latin += n;
    }

    /// Counts one character.
    pub fn add_char(&mut self, c: char) {
        if latin_like(c) {
            self.latin += 1;
        } else {
            self.other += 1;
        }
    }

    /// The tokens of what was counted, as [`CharEstimator::estimate`] of the
    /// whole text says.
    pub fn tokens(&self) -> u64 {
        self.latin.div_ceil(4) + self.other
    }
}

impl TokenEstimator for CharEstimator {
    fn estimate(&self, text: &str) -> u64 {
        let mut count = CharCount::default();
        count.add_str(text);
        count.tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_is_about_four_characters_a_token() {
        let e = CharEstimator;
        assert_eq!(e.estimate(""), 0);
        assert_eq!(e.estimate("Hello, world!"), 4); // 13 chars
        assert_eq!(e.estimate("abcd"), 1);
        // Vietnamese is Latin script with diacritics.
        assert_eq!(e.estimate("Xin chào thế giới"), 5); // 17 chars
    }

    #[test]
    fn thai_and_cjk_are_a_token_a_character() {
        let e = CharEstimator;
        assert_eq!(e.estimate("ทดสอบการเชื่อมต่อ"), 17);
        assert_eq!(e.estimate("你好世界"), 4);
        // Mixed: "ทดสอบ API" = 5 Thai + 4 Latin (space and "API").
        assert_eq!(e.estimate("ทดสอบ API"), 6);
    }

    #[test]
    fn chat_adds_per_message_overhead() {
        let e = CharEstimator;
        assert_eq!(e.estimate_chat(["abcd", "ทดสอบ"]), (1 + 4) + (5 + 4) + 3);
        assert_eq!(e.estimate_chat(std::iter::empty()), 3);
    }
}
