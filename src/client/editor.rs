//! The input line of the terminal client: editing keys, input history and the
//! horizontally scrolled view that fits the terminal width. Pure (no terminal I/O).

use std::collections::VecDeque;

/// Longest input line, in characters; further typing is ignored (the server refuses
/// long lines anyway, 4096 bytes by default).
pub const MAX_INPUT_CHARS: usize = 8192;
/// Input lines remembered for Up/Down.
pub const MAX_HISTORY: usize = 500;

/// An editing action, already decoded from whatever key produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Insert(char),
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Backspace,
    Delete,
    /// Ctrl-U: delete from the start of the line to the cursor.
    KillToStart,
    /// Ctrl-K: delete from the cursor to the end of the line.
    KillToEnd,
    /// Ctrl-W: delete the word before the cursor.
    DeleteWordBefore,
    HistoryPrevious,
    HistoryNext,
}

/// The line being typed.
#[derive(Debug, Default)]
pub struct LineEditor {
    chars: Vec<char>,
    cursor: usize,
    /// First character shown when the line is wider than the terminal.
    scroll: usize,
    history: VecDeque<String>,
    /// Which history entry is shown (None: the line being written).
    browsing: Option<usize>,
    /// The line being written, kept while browsing history.
    draft: Vec<char>,
}

impl LineEditor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Cursor position in characters.
    #[cfg(test)]
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Apply one edit; returns false when nothing changed (a bell-worthy key).
    pub fn apply(&mut self, edit: Edit) -> bool {
        let before = (self.chars.len(), self.cursor);
        match edit {
            Edit::Insert(c) => {
                if c.is_control() || self.chars.len() >= MAX_INPUT_CHARS {
                    return false;
                }
                self.chars.insert(self.cursor, c);
                self.cursor += 1;
                return true;
            }
            Edit::Left => self.cursor = self.cursor.saturating_sub(1),
            Edit::Right => self.cursor = (self.cursor + 1).min(self.chars.len()),
            Edit::WordLeft => self.cursor = self.word_start_before(self.cursor),
            Edit::WordRight => {
                let mut at = self.cursor;
                while at < self.chars.len() && self.chars[at].is_whitespace() {
                    at += 1;
                }
                while at < self.chars.len() && !self.chars[at].is_whitespace() {
                    at += 1;
                }
                self.cursor = at;
            }
            Edit::Home => self.cursor = 0,
            Edit::End => self.cursor = self.chars.len(),
            Edit::Backspace => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.chars.remove(self.cursor);
                }
            }
            Edit::Delete => {
                if self.cursor < self.chars.len() {
                    self.chars.remove(self.cursor);
                }
            }
            Edit::KillToStart => {
                self.chars.drain(..self.cursor);
                self.cursor = 0;
            }
            Edit::KillToEnd => self.chars.truncate(self.cursor),
            Edit::DeleteWordBefore => {
                let start = self.word_start_before(self.cursor);
                self.chars.drain(start..self.cursor);
                self.cursor = start;
            }
            Edit::HistoryPrevious => return self.browse_back(),
            Edit::HistoryNext => return self.browse_forward(),
        }
        before != (self.chars.len(), self.cursor)
    }

    /// Where the word before `at` starts (skipping whitespace first), as shells do.
    fn word_start_before(&self, mut at: usize) -> usize {
        while at > 0 && self.chars[at - 1].is_whitespace() {
            at -= 1;
        }
        while at > 0 && !self.chars[at - 1].is_whitespace() {
            at -= 1;
        }
        at
    }

    fn browse_back(&mut self) -> bool {
        let next = match self.browsing {
            None if self.history.is_empty() => return false,
            None => {
                self.draft = std::mem::take(&mut self.chars);
                self.history.len() - 1
            }
            Some(0) => return false,
            Some(index) => index - 1,
        };
        self.show_history(Some(next));
        true
    }

    fn browse_forward(&mut self) -> bool {
        match self.browsing {
            None => false,
            Some(index) if index + 1 < self.history.len() => {
                self.show_history(Some(index + 1));
                true
            }
            Some(_) => {
                self.show_history(None);
                true
            }
        }
    }

    fn show_history(&mut self, entry: Option<usize>) {
        self.browsing = entry;
        self.chars = match entry {
            Some(index) => self.history[index].chars().collect(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.chars.len();
    }

    /// Enter: take the line, remember it in the history (unless `remember` is false, as
    /// for a name), and start a fresh one.
    pub fn submit(&mut self, remember: bool) -> String {
        let line = self.text();
        self.chars.clear();
        self.draft.clear();
        self.cursor = 0;
        self.scroll = 0;
        self.browsing = None;
        if remember && !line.trim().is_empty() && self.history.back() != Some(&line) {
            if self.history.len() == MAX_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        line
    }

    /// The part of the line that fits in `width` columns, and the cursor's column in
    /// it. Scrolls just enough to keep the cursor visible (with a free column after it).
    pub fn view(&mut self, width: usize) -> (String, usize) {
        let width = width.max(2);
        self.scroll = self.scroll.min(self.cursor);
        while columns(&self.chars[self.scroll..self.cursor]) >= width {
            self.scroll += 1;
        }
        let mut shown = String::new();
        let mut used = 0;
        for &c in &self.chars[self.scroll..] {
            let w = char_width(c);
            if used + w > width {
                break;
            }
            used += w;
            shown.push(c);
        }
        (shown, columns(&self.chars[self.scroll..self.cursor]))
    }
}

fn columns(chars: &[char]) -> usize {
    chars.iter().map(|&c| char_width(c)).sum()
}

/// Terminal columns a character takes: 0 for combining and zero-width characters, 2
/// for East Asian wide characters and most emoji, 1 otherwise. An approximation of
/// Unicode's East Asian Width that covers the common cases without a table crate.
pub fn char_width(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036F
        | 0x0483..=0x0489
        | 0x0591..=0x05BD
        | 0x0610..=0x061A
        | 0x064B..=0x065F
        | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF
        | 0x200B..=0x200F
        | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F
        | 0xE0100..=0xE01EF => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ if c.is_control() => 0,
        _ => 1,
    }
}

/// Display width of a string, in terminal columns.
pub fn str_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> LineEditor {
        let mut editor = LineEditor::new();
        for c in text.chars() {
            assert!(editor.apply(Edit::Insert(c)));
        }
        editor
    }

    #[test]
    fn inserts_and_moves_by_character_and_word() {
        let mut editor = typed("hello world");
        assert!(editor.apply(Edit::WordLeft));
        assert_eq!(editor.cursor(), 6);
        editor.apply(Edit::Left);
        editor.apply(Edit::Insert(','));
        assert_eq!(editor.text(), "hello, world");
        editor.apply(Edit::Home);
        assert!(!editor.apply(Edit::Left), "nothing left of home");
        editor.apply(Edit::Insert('>'));
        editor.apply(Edit::End);
        assert!(!editor.apply(Edit::Right));
        editor.apply(Edit::Insert('!'));
        assert_eq!(editor.text(), ">hello, world!");
        editor.apply(Edit::Home);
        editor.apply(Edit::WordRight);
        assert_eq!(editor.cursor(), 7);
    }

    #[test]
    fn deletes() {
        let mut editor = typed("one two  three");
        editor.apply(Edit::DeleteWordBefore);
        assert_eq!(editor.text(), "one two  ");
        editor.apply(Edit::DeleteWordBefore);
        assert_eq!(editor.text(), "one ");
        editor.apply(Edit::Backspace);
        assert_eq!(editor.text(), "one");
        editor.apply(Edit::Home);
        assert!(!editor.apply(Edit::Backspace));
        editor.apply(Edit::Delete);
        assert_eq!(editor.text(), "ne");
        editor.apply(Edit::Right);
        editor.apply(Edit::KillToEnd);
        assert_eq!(editor.text(), "n");
        let mut editor = typed("abc def");
        editor.apply(Edit::WordLeft);
        editor.apply(Edit::KillToStart);
        assert_eq!((editor.text().as_str(), editor.cursor()), ("def", 0));
    }

    #[test]
    fn control_characters_and_overflow_are_not_inserted() {
        let mut editor = LineEditor::new();
        assert!(!editor.apply(Edit::Insert('\u{1b}')));
        assert!(!editor.apply(Edit::Insert('\n')));
        for _ in 0..MAX_INPUT_CHARS {
            editor.apply(Edit::Insert('x'));
        }
        assert!(!editor.apply(Edit::Insert('x')));
        assert_eq!(editor.text().len(), MAX_INPUT_CHARS);
    }

    #[test]
    fn history_browses_back_and_forward_keeping_the_draft() {
        let mut editor = typed("first");
        assert_eq!(editor.submit(true), "first");
        for c in "second".chars() {
            editor.apply(Edit::Insert(c));
        }
        editor.submit(true);
        editor.submit(true); // empty lines are not remembered
        for c in "second".chars() {
            editor.apply(Edit::Insert(c));
        }
        editor.submit(true); // nor repeats
        for c in "secret".chars() {
            editor.apply(Edit::Insert(c));
        }
        editor.submit(false); // nor names
        for c in "draft".chars() {
            editor.apply(Edit::Insert(c));
        }
        assert!(editor.apply(Edit::HistoryPrevious));
        assert_eq!(editor.text(), "second");
        assert!(editor.apply(Edit::HistoryPrevious));
        assert_eq!(editor.text(), "first");
        assert!(!editor.apply(Edit::HistoryPrevious));
        assert!(editor.apply(Edit::HistoryNext));
        assert!(editor.apply(Edit::HistoryNext));
        assert_eq!(editor.text(), "draft");
        assert_eq!(editor.cursor(), 5);
        assert!(!editor.apply(Edit::HistoryNext));
        // A recalled line can be edited and sent.
        editor.apply(Edit::HistoryPrevious);
        editor.apply(Edit::Insert('!'));
        assert_eq!(editor.submit(true), "second!");
        assert!(editor.is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut editor = LineEditor::new();
        for n in 0..MAX_HISTORY + 10 {
            for c in n.to_string().chars() {
                editor.apply(Edit::Insert(c));
            }
            editor.submit(true);
        }
        let mut steps = 0;
        while editor.apply(Edit::HistoryPrevious) {
            steps += 1;
        }
        assert_eq!(steps, MAX_HISTORY);
        assert_eq!(editor.text(), "10");
    }

    #[test]
    fn view_scrolls_to_keep_the_cursor_visible() {
        let mut editor = typed("abcdefghij");
        assert_eq!(editor.view(20), ("abcdefghij".into(), 10));
        // Cursor at the end of a line wider than the view: the tail is shown.
        assert_eq!(editor.view(5), ("ghij".into(), 4));
        editor.apply(Edit::Home);
        assert_eq!(editor.view(5), ("abcde".into(), 0));
        for _ in 0..7 {
            editor.apply(Edit::Right);
        }
        let (shown, column) = editor.view(5);
        assert_eq!(shown.chars().nth(column), Some('h'));
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(str_width("a김😀e\u{301}"), 1 + 2 + 2 + 1);
        let mut editor = typed("김철수김철수");
        let (shown, column) = editor.view(7);
        assert_eq!(column, 6);
        assert_eq!(str_width(&shown), 6);
    }
}
