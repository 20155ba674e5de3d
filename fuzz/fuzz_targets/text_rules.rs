//! Fuzz nickname validation, room names and text sanitising: accepted names contain
//! nothing invisible or spacey; sanitised text contains no control or bidi characters
//! and is unchanged when it had none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::text::{fold_case, is_invisible, normalize_room, sanitize_text, validate_nick};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    if let Ok(nick) = validate_nick(&text) {
        assert!(!nick.is_empty());
        assert!(nick
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !is_invisible(c)));
        let _ = fold_case(nick);
    }
    if let Ok(room) = normalize_room(&text) {
        assert!(room.starts_with('#'));
        assert!(room.chars().all(|c| !c.is_whitespace() && !c.is_control()));
    }
    let clean = sanitize_text(&text);
    assert!(
        clean.chars().all(|c| !c.is_control()),
        "control character survived"
    );
    assert!(
        !clean.contains(['\u{202E}', '\u{202D}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'])
    );
    if !text.chars().any(|c| c.is_control() || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')) {
        assert_eq!(clean.as_ref(), text.as_ref());
    }
});
