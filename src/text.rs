//! Text rules shared by every front door: nickname and room-name validation, and
//! neutralising message text so no client can inject lines, forge prefixes or restyle
//! other users' terminals. Pure functions, no I/O.

use std::fmt;

/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 32;
/// Longest room name, in characters, including the leading `#`.
pub const MAX_ROOM_CHARS: usize = 50;
/// Longest room topic, in characters (IRC's TOPICLEN): fits one IRC line with room to spare.
pub const MAX_TOPIC_CHARS: usize = 300;
/// Longest away message, in characters (IRC's AWAYLEN).
pub const MAX_AWAY_CHARS: usize = 300;
/// Longest room key (`+k`), in characters (IRC's KEYLEN).
pub const MAX_KEY_CHARS: usize = 32;

/// Why a nickname was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NickError {
    Empty,
    TooLong {
        max: usize,
    },
    Whitespace,
    /// Control, invisible or formatting characters (bidi overrides, zero-width, ...).
    Invisible,
    /// A character outside letters, digits and `- _ . ' | ^ { } \``.
    Disallowed(char),
    /// Not valid UTF-8.
    NotUtf8,
    /// Already used by another client (compared as [`nick_key`] compares).
    Taken,
    /// Registered to an account (or looks like a registered name): only its owner,
    /// logged in, may use it.
    Registered,
    /// A name the server itself answers as ([`RESERVED_NICKS`]).
    Reserved,
}

/// Names nobody may take: the server answers to them itself (IRC users register and
/// log in by writing to NickServ), so whoever held one could collect passwords.
pub const RESERVED_NICKS: [&str; 1] = ["NickServ"];

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NickError::Empty => write!(f, "the name is empty"),
            NickError::TooLong { max } => write!(f, "the name is longer than {max} characters"),
            NickError::Whitespace => write!(f, "the name contains whitespace"),
            NickError::Invisible => {
                write!(f, "the name contains control or invisible characters")
            }
            NickError::Disallowed(c) => write!(
                f,
                "the name contains {c:?}; use letters, digits and - _ . ' | ^ {{ }} `"
            ),
            NickError::NotUtf8 => write!(f, "the name is not valid UTF-8"),
            NickError::Taken => write!(f, "the name is already in use"),
            NickError::Registered => write!(
                f,
                "the name is registered; log in to use it, or choose another"
            ),
            NickError::Reserved => write!(f, "the name is the server's own; choose another"),
        }
    }
}

impl std::error::Error for NickError {}

/// Characters that change how text is displayed without being visible themselves:
/// bidi controls, zero-width characters, soft hyphen, byte-order mark and friends.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Bidi embedding/override/isolate controls: neutralised in message text because they
/// can reorder the rest of a rendered line (including the next user's prefix).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn nick_char_allowed(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '\'' | '|' | '^' | '{' | '}' | '`')
}

/// Validate a nickname as typed. Returns the nickname to use (surrounding whitespace is
/// not trimmed: a name with whitespace is refused so the user sees why).
pub fn validate_nick(raw: &str) -> Result<&str, NickError> {
    if raw.is_empty() {
        return Err(NickError::Empty);
    }
    if raw.chars().count() > MAX_NICK_CHARS {
        return Err(NickError::TooLong {
            max: MAX_NICK_CHARS,
        });
    }
    for c in raw.chars() {
        if c.is_whitespace() {
            return Err(NickError::Whitespace);
        }
        if c.is_control() || is_invisible(c) {
            return Err(NickError::Invisible);
        }
        if !nick_char_allowed(c) {
            return Err(NickError::Disallowed(c));
        }
    }
    // Compared as names are (case and look-alike letters folded).
    let key = nick_key(raw);
    if RESERVED_NICKS
        .iter()
        .any(|reserved| nick_key(reserved) == key)
    {
        return Err(NickError::Reserved);
    }
    Ok(raw)
}

/// Why `key` cannot be a room key, if it cannot. A key is one word every door can
/// send: no spaces, and no commas (IRC's `JOIN #a,#b k1,k2` separates keys with them),
/// no control or invisible characters (it is typed, not pasted from a payload), at
/// most [`MAX_KEY_CHARS`]. Compared exactly, case and all, as IRC servers do.
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("a key cannot be empty".into());
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Some(format!("a key is at most {MAX_KEY_CHARS} characters"));
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == ',' || c.is_control() || is_invisible(c))
    {
        return Some("a key is one word: no spaces, commas or control characters".into());
    }
    None
}

/// The key under which names are compared: case-insensitive (Unicode lowercase).
pub fn fold_case(name: &str) -> String {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// The key under which nicknames and account names are compared: names that look
/// alike are the same name. Case is folded first, then the Unicode TS #39 skeleton is
/// taken (confusables mapped to one prototype, NFD), then case folded again (a
/// prototype may be a capital) and combining marks dropped (`José` is `Jose`, and the
/// dot that lowercasing leaves on `İ` does not make `ALİCE` a new name): `alice`,
/// `ALICE`, `аlice` (Cyrillic а) and `ａｌｉｃｅ` (fullwidth) share one key. The
/// skeleton alone is case-sensitive and makes capital `I` the same as `l`;
/// case-insensitive, `I` is also `i`, so `i` is mapped to `l` too: `aIice` is `alice`
/// (and so, harmlessly, is `allce`).
///
/// One pass is not always stable (a prototype's lowercase can itself have another
/// prototype), so the steps repeat until the key stops changing: a key's key is
/// itself, which the hub and the accounts rely on when they store keys.
pub fn nick_key(name: &str) -> String {
    let mut key = key_step(name);
    // Two or three passes settle every character; the bound only guards the loop.
    for _ in 0..8 {
        let next = key_step(&key);
        if next == key {
            break;
        }
        key = next;
    }
    key
}

fn key_step(name: &str) -> String {
    let folded = fold_case(name);
    unicode_security::confusable_detection::skeleton(&folded)
        .flat_map(char::to_lowercase)
        .filter(|&c| !unicode_normalization::char::is_combining_mark(c))
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect()
}

/// Whether two names are equal case-insensitively (as [`fold_case`] compares them),
/// without allocating.
pub fn same_folded(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomNameError(pub String);

impl fmt::Display for RoomNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RoomNameError {}

/// Normalise a room name: a missing leading `#` is added; the rest follows the
/// nickname character rules (so room names survive every wire format, IRC included).
pub fn normalize_room(raw: &str) -> Result<String, RoomNameError> {
    let body = raw.strip_prefix('#').unwrap_or(raw);
    if body.is_empty() {
        return Err(RoomNameError("the room name is empty".into()));
    }
    if body.chars().count() + 1 > MAX_ROOM_CHARS {
        return Err(RoomNameError(format!(
            "the room name is longer than {MAX_ROOM_CHARS} characters"
        )));
    }
    if let Some(bad) = body
        .chars()
        .find(|&c| !nick_char_allowed(c) || is_invisible(c))
    {
        return Err(RoomNameError(format!(
            "the room name contains {bad:?}; use letters, digits and - _ ."
        )));
    }
    Ok(format!("#{body}"))
}

/// Neutralise message text for every audience: control characters (C0 except tab, DEL,
/// C1 — so CR, LF, ESC and NUL) become U+FFFD, tab becomes a space, and bidi controls are
/// removed. Everything else, every script and emoji (zero-width joiners included), passes.
/// Returns the input unchanged (no allocation) when there is nothing to neutralise.
pub fn sanitize_text(text: &str) -> std::borrow::Cow<'_, str> {
    let needs_work = text.chars().any(|c| c.is_control() || is_bidi_control(c));
    if !needs_work {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => clean.push(' '),
            c if c.is_control() => clean.push('\u{FFFD}'),
            c if is_bidi_control(c) => {}
            c => clean.push(c),
        }
    }
    std::borrow::Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_key_is_one_typed_word() {
        for good in [
            "secret",
            "Sesam-öffne-dich",
            "k1",
            &"x".repeat(MAX_KEY_CHARS),
        ] {
            assert_eq!(key_problem(good), None, "{good:?}");
        }
        for bad in [
            "",
            "two words",
            "k1,k2",
            "tab\there",
            "zero\u{200B}width",
            &"x".repeat(MAX_KEY_CHARS + 1),
        ] {
            assert!(key_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn look_alike_names_share_a_key() {
        let alice = nick_key("alice");
        for same in [
            "Alice",
            "ALICE",
            "\u{0430}lice",
            "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}",
            "aIice",
            "al\u{0456}ce",
        ] {
            assert_eq!(nick_key(same), alice, "{same:?}");
        }
        for different in ["alicia", "bob", "alice2", "al1ce_"] {
            assert_ne!(nick_key(different), alice, "{different:?}");
        }
        // Other scripts keep their own names.
        assert_ne!(nick_key("김철수"), nick_key("김철"));
        assert_eq!(nick_key("Straße"), nick_key("straße"));
        // Marks do not make a new name.
        assert_eq!(nick_key("ALİCE"), alice);
        assert_eq!(nick_key("José"), nick_key("Jose"));
    }

    #[test]
    fn a_key_is_its_own_key() {
        // Every character, alone and beside a letter: one pass of the skeleton is not
        // always stable, the key must be.
        let mut unstable = Vec::new();
        for c in (0..=0x3_FFFFu32).filter_map(char::from_u32) {
            for name in [c.to_string(), format!("a{c}")] {
                let key = nick_key(&name);
                if nick_key(&key) != key {
                    unstable.push(name);
                }
            }
        }
        assert!(
            unstable.is_empty(),
            "{} unstable, first {:?}",
            unstable.len(),
            &unstable[..unstable.len().min(10)]
        );
    }

    #[test]
    fn accepts_ordinary_names_in_any_script() {
        for name in ["alice", "Bob_2", "김철수", "straße", "o'neil", "x"] {
            assert_eq!(validate_nick(name), Ok(name));
        }
    }

    #[test]
    fn refuses_bad_names_with_reasons() {
        assert_eq!(validate_nick(""), Err(NickError::Empty));
        assert_eq!(validate_nick("a b"), Err(NickError::Whitespace));
        assert_eq!(validate_nick("tab\there"), Err(NickError::Whitespace));
        assert_eq!(validate_nick("nul\0"), Err(NickError::Invisible));
        assert_eq!(validate_nick("esc\u{1b}[31m"), Err(NickError::Invisible));
        assert_eq!(validate_nick("ali\u{200B}ce"), Err(NickError::Invisible));
        assert_eq!(validate_nick("\u{202E}ecila"), Err(NickError::Invisible));
        assert_eq!(validate_nick("[admin]"), Err(NickError::Disallowed('[')));
        assert_eq!(validate_nick("#room"), Err(NickError::Disallowed('#')));
        assert_eq!(
            validate_nick(&"a".repeat(MAX_NICK_CHARS + 1)),
            Err(NickError::TooLong {
                max: MAX_NICK_CHARS
            })
        );
        assert!(validate_nick(&"가".repeat(MAX_NICK_CHARS)).is_ok());
        // The server's own names, however spelled.
        for reserved in ["NickServ", "nickserv", "NICKSERV", "N\u{0456}ckServ"] {
            assert_eq!(
                validate_nick(reserved),
                Err(NickError::Reserved),
                "{reserved}"
            );
        }
        assert!(validate_nick("NickServ_").is_ok());
    }

    #[test]
    fn folds_case_for_comparison() {
        assert_eq!(fold_case("Alice"), fold_case("aLICE"));
        assert_eq!(fold_case("ÄRGER"), "ärger");
    }

    #[test]
    fn compares_folded_without_allocating() {
        assert!(same_folded("#General", "#general"));
        assert!(same_folded("#ÄRGER", "#ärger"));
        assert!(!same_folded("#general", "#generals"));
    }

    #[test]
    fn normalizes_room_names() {
        assert_eq!(normalize_room("rust").unwrap(), "#rust");
        assert_eq!(normalize_room("#rust").unwrap(), "#rust");
        assert!(normalize_room("#").is_err());
        assert!(normalize_room("a b").is_err());
        assert!(normalize_room(&"r".repeat(MAX_ROOM_CHARS)).is_err());
    }

    #[test]
    fn sanitizes_text_without_losing_scripts() {
        assert!(matches!(
            sanitize_text("hello 세계 👨‍👩‍👧"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            sanitize_text("a\r\n[bob] forged"),
            "a\u{FFFD}\u{FFFD}[bob] forged"
        );
        assert_eq!(sanitize_text("\u{1b}[31mred"), "\u{FFFD}[31mred");
        assert_eq!(sanitize_text("x\0y"), "x\u{FFFD}y");
        assert_eq!(sanitize_text("a\tb"), "a b");
        assert_eq!(sanitize_text("\u{202E}txet"), "txet");
        assert_eq!(sanitize_text("\u{85}next"), "\u{FFFD}next");
    }
}
