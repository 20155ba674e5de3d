//! IRC message syntax (RFC 1459 / modern IRC), pure: one line in, its parts out.
//!
//! `[@tags ][:prefix ]COMMAND[ param]*[ :trailing]`. Tags are kept as one raw string
//! (no capability that reads client tags is offered yet); the prefix a client sends is
//! ignored, as servers do. Commands are upper-cased so `privmsg` works too.

/// One parsed line. Borrowed from the line: parsing allocates only the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcMessage<'line> {
    pub tags: Option<&'line str>,
    pub command: String,
    pub params: Vec<&'line str>,
}

/// Most parameters a line may have (RFC 2812: 14 middle plus the trailing one).
pub const MAX_PARAMS: usize = 15;

/// Parse one line (without its CR LF). `None` for a line with no command (empty, or
/// only tags or a prefix): servers ignore those.
pub fn parse(line: &str) -> Option<IrcMessage<'_>> {
    let mut rest = line.trim_start_matches(' ');
    let mut tags = None;
    if let Some(tagged) = rest.strip_prefix('@') {
        let (raw, after) = tagged.split_once(' ')?;
        tags = Some(raw);
        rest = after.trim_start_matches(' ');
    }
    if rest.starts_with(':') {
        let (_prefix, after) = rest.split_once(' ')?;
        rest = after.trim_start_matches(' ');
    }
    let (command, mut rest) = match rest.split_once(' ') {
        Some((command, after)) => (command, after),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        if params.len() == MAX_PARAMS - 1 {
            // The last allowed parameter takes the rest of the line, spaces included.
            params.push(rest);
            break;
        }
        match rest.split_once(' ') {
            Some((param, after)) => {
                params.push(param);
                rest = after;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Some(IrcMessage {
        tags,
        command: command.to_ascii_uppercase(),
        params,
    })
}

/// A CTCP ACTION (`/me`) body, if `text` is one: `\x01ACTION waves\x01`.
pub fn ctcp_action(text: &str) -> Option<&str> {
    let body = text.strip_prefix('\u{1}')?;
    let body = body.strip_suffix('\u{1}').unwrap_or(body);
    body.strip_prefix("ACTION ")
        .or_else(|| (body == "ACTION").then_some(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(line: &str) -> (String, Vec<&str>) {
        let message = parse(line).expect("a command");
        (message.command, message.params)
    }

    #[test]
    fn splits_command_params_and_trailing() {
        assert_eq!(parts("NICK alice"), ("NICK".into(), vec!["alice"]));
        assert_eq!(
            parts("USER alice 0 * :Alice Liddell"),
            ("USER".into(), vec!["alice", "0", "*", "Alice Liddell"])
        );
        assert_eq!(
            parts("privmsg #general :hello :) there"),
            ("PRIVMSG".into(), vec!["#general", "hello :) there"])
        );
        assert_eq!(parts("PING"), ("PING".into(), vec![]));
        assert_eq!(parts("PART #a  #b"), ("PART".into(), vec!["#a", "#b"]));
        assert_eq!(
            parts("PRIVMSG #a :"),
            ("PRIVMSG".into(), vec!["#a", ""]),
            "an empty trailing parameter is still a parameter"
        );
    }

    #[test]
    fn skips_a_prefix_and_keeps_tags_raw() {
        let message = parse("@label=1;+draft/x :alice!a@h PRIVMSG #a :hi").unwrap();
        assert_eq!(message.tags, Some("label=1;+draft/x"));
        assert_eq!(message.command, "PRIVMSG");
        assert_eq!(message.params, vec!["#a", "hi"]);
    }

    #[test]
    fn lines_without_a_command_are_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("   "), None);
        assert_eq!(parse(":prefix-only"), None);
        assert_eq!(parse("@tags-only"), None);
    }

    #[test]
    fn the_fifteenth_parameter_takes_the_rest() {
        let line = "CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
        let (_, params) = parts(line);
        assert_eq!(params.len(), MAX_PARAMS);
        assert_eq!(params[14], "15 16");
    }

    #[test]
    fn recognises_ctcp_action() {
        assert_eq!(ctcp_action("\u{1}ACTION waves\u{1}"), Some("waves"));
        assert_eq!(ctcp_action("\u{1}ACTION waves"), Some("waves"));
        assert_eq!(ctcp_action("\u{1}VERSION\u{1}"), None);
        assert_eq!(ctcp_action("ACTION waves"), None);
    }

    /// Garbage never panics: every prefix of a line full of separators parses or not.
    #[test]
    fn every_prefix_of_odd_input_parses_without_panicking() {
        let line = "@a=b;c :p!u@h  CMD  x :y z\u{1}\u{0}é";
        for end in (0..=line.len()).filter(|&end| line.is_char_boundary(end)) {
            let _ = parse(&line[..end]);
        }
    }
}
