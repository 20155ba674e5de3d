//! Interactive mode: the terminal in raw mode with an input line at the bottom; incoming
//! lines are printed above it (into the terminal's own scrollback) while the user types.
//! Owns restoring the terminal on every way out, panics included.

use std::io::{self, Write as _};

use crossterm::cursor::MoveToColumn;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::style::Print;
use crossterm::terminal::{self, Clear, ClearType};
use crossterm::QueueableCommand as _;
use futures_util::StreamExt as _;

use super::editor::{str_width, Edit, LineEditor};
use super::UserInput;

/// Leaves raw mode when dropped, however the client ends.
struct RawMode;

impl RawMode {
    fn enable() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        install_panic_restore();
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let mut stdout = io::stdout();
    // Leave the cursor on a fresh line so the shell prompt does not land mid-input.
    let _ = stdout.queue(MoveToColumn(0));
    let _ = stdout.queue(Clear(ClearType::CurrentLine));
    let _ = stdout.flush();
}

/// A panic message printed in raw mode would be smeared across the screen, and the
/// shell would be left without echo: restore first, then let the usual hook report.
fn install_panic_restore() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

pub struct TerminalUi {
    events: EventStream,
    editor: LineEditor,
    prompt: String,
    /// The next submitted line is a name (not kept in the input history).
    asking_name: bool,
    stdout: io::Stdout,
    _raw: RawMode,
}

impl TerminalUi {
    pub fn start() -> io::Result<Self> {
        let raw = RawMode::enable()?;
        let mut ui = TerminalUi {
            events: EventStream::new(),
            editor: LineEditor::new(),
            prompt: String::new(),
            asking_name: false,
            stdout: io::stdout(),
            _raw: raw,
        };
        ui.redraw()?;
        Ok(ui)
    }

    /// Show `prompt` before the input line; `for_name`: what is typed next is a name.
    pub fn set_prompt(&mut self, prompt: &str, for_name: bool) {
        self.prompt = prompt.to_owned();
        self.asking_name = for_name;
        let _ = self.redraw();
    }

    /// Wait for the user to submit a line or ask to quit, handling editing keys on the
    /// way. Cancel-safe: all state lives in `self` between events.
    pub async fn next_input(&mut self) -> UserInput {
        loop {
            let event = match self.events.next().await {
                Some(Ok(event)) => event,
                // The terminal went away (hangup) or cannot be read.
                Some(Err(_)) | None => return UserInput::Quit,
            };
            match event {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    if let Some(input) = self.on_key(key) {
                        return input;
                    }
                }
                Event::Resize(..) => {
                    let _ = self.redraw();
                }
                Event::Paste(text) => {
                    for c in text.chars() {
                        self.editor.apply(Edit::Insert(c));
                    }
                    let _ = self.redraw();
                }
                _ => {}
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<UserInput> {
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let edit = match key.code {
            KeyCode::Enter => {
                let line = self.editor.submit(!self.asking_name);
                let _ = self.redraw();
                return Some(UserInput::Line(line));
            }
            KeyCode::Char('c') if control => return Some(UserInput::Quit),
            KeyCode::Char('d') if control => {
                if self.editor.is_empty() {
                    return Some(UserInput::Quit);
                }
                Edit::Delete
            }
            KeyCode::Char('l') if control => {
                let _ = self.stdout.queue(Clear(ClearType::All));
                let _ = self.stdout.queue(crossterm::cursor::MoveTo(0, 0));
                let _ = self.redraw();
                return None;
            }
            KeyCode::Char('a') if control => Edit::Home,
            KeyCode::Char('e') if control => Edit::End,
            KeyCode::Char('b') if control => Edit::Left,
            KeyCode::Char('f') if control => Edit::Right,
            KeyCode::Char('u') if control => Edit::KillToStart,
            KeyCode::Char('k') if control => Edit::KillToEnd,
            KeyCode::Char('w') if control => Edit::DeleteWordBefore,
            KeyCode::Char('h') if control => Edit::Backspace,
            KeyCode::Char('p') if control => Edit::HistoryPrevious,
            KeyCode::Char('n') if control => Edit::HistoryNext,
            KeyCode::Char('b') if alt => Edit::WordLeft,
            KeyCode::Char('f') if alt => Edit::WordRight,
            KeyCode::Char(_) if control || alt => return None,
            KeyCode::Char(c) => Edit::Insert(c),
            KeyCode::Tab => Edit::Insert(' '),
            KeyCode::Left if control => Edit::WordLeft,
            KeyCode::Right if control => Edit::WordRight,
            KeyCode::Left => Edit::Left,
            KeyCode::Right => Edit::Right,
            KeyCode::Home => Edit::Home,
            KeyCode::End => Edit::End,
            KeyCode::Backspace => Edit::Backspace,
            KeyCode::Delete => Edit::Delete,
            KeyCode::Up => Edit::HistoryPrevious,
            KeyCode::Down => Edit::HistoryNext,
            _ => return None,
        };
        if self.editor.apply(edit) {
            let _ = self.redraw();
        }
        None
    }

    /// Print one line above the input line (the input line is redrawn below it).
    pub fn show(&mut self, line: &str) -> io::Result<()> {
        self.stdout.queue(MoveToColumn(0))?;
        self.stdout.queue(Clear(ClearType::CurrentLine))?;
        self.stdout.queue(Print(line))?;
        self.stdout.queue(Print("\r\n"))?;
        self.redraw()
    }

    /// The client's own remarks appear in the same flow as server lines.
    pub fn notice(&mut self, text: &str) {
        let _ = self.show(text);
    }

    fn redraw(&mut self) -> io::Result<()> {
        let width = terminal::size().map_or(80, |(columns, _)| usize::from(columns));
        // Keep the last column free so the cursor never wraps onto a new row.
        let mut prompt = self.prompt.as_str();
        if str_width(prompt) + 10 > width {
            prompt = "";
        }
        let room = width.saturating_sub(str_width(prompt) + 1).max(2);
        let (shown, cursor) = self.editor.view(room);
        let column = str_width(prompt) + cursor;
        self.stdout.queue(MoveToColumn(0))?;
        self.stdout.queue(Clear(ClearType::CurrentLine))?;
        self.stdout.queue(Print(prompt))?;
        self.stdout.queue(Print(shown))?;
        self.stdout
            .queue(MoveToColumn(u16::try_from(column).unwrap_or(u16::MAX)))?;
        self.stdout.flush()
    }
}
