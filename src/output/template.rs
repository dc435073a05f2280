//! The `template` output format: text with placeholders, for consumers that want a shape none of
//! the fixed formats gives (a `.netrc` line, a YAML fragment, a config file's snippet).
//!
//! Placeholders: `{token}`, `{expires_at}` (RFC 3339 UTC, whole seconds, as the `json` format
//! writes it), `{expires_in}` (the token's lifetime in whole seconds as granted: its expiry minus
//! the time it was obtained), `{account}` and `{type}` (the scheme, e.g. `Bearer`; empty for a
//! bare token). `{{` and `}}` are literal braces.
//!
//! Invariants: parsed once, at config load, where an unknown placeholder, an unclosed `{` or a
//! template without `{token}` is an error; rendering is pure and allocates the output once, with
//! room for all of it, so no reallocation leaves an unzeroized copy of the token; every value is
//! a function of the token alone (never of the clock), so re-rendering the same token gives the
//! same bytes, and an unchanged token is never rewritten.

use zeroize::Zeroizing;

use crate::token::Token;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// As the config wrote it, for `check`.
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Token,
    ExpiresAt,
    ExpiresIn,
    Account,
    Type,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Token,
        Field::ExpiresAt,
        Field::ExpiresIn,
        Field::Account,
        Field::Type,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Token => "token",
            Field::ExpiresAt => "expires_at",
            Field::ExpiresIn => "expires_in",
            Field::Account => "account",
            Field::Type => "type",
        }
    }
}

/// The placeholders, as the docs and errors list them.
fn known() -> String {
    let names: Vec<String> = Field::ALL
        .iter()
        .map(|field| format!("{{{}}}", field.name()))
        .collect();
    names.join(", ")
}

impl Template {
    /// Parses a template's text.
    ///
    /// # Errors
    /// An unknown or unclosed placeholder, a lone `}`, or no `{token}`; the message quotes only
    /// the template's own text (which is config, not a secret).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err("a lone `}`: write `}}` for a literal brace".to_string());
            } else {
                let Some(end) = tail.find('}') else {
                    return Err(format!(
                        "an unclosed `{{` at `{}`: write `{{{{` for a literal brace",
                        shorten(tail)
                    ));
                };
                let name = &tail[1..end];
                let field = Field::ALL
                    .into_iter()
                    .find(|field| field.name() == name)
                    .ok_or_else(|| {
                        format!(
                            "unknown placeholder `{{{}}}`; the placeholders are {}",
                            shorten(name),
                            known()
                        )
                    })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(field));
                rest = &tail[end + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if !pieces.contains(&Piece::Field(Field::Token)) {
            return Err(format!(
                "the template has no `{{token}}`; the placeholders are {}",
                known()
            ));
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    /// The template as the config wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The file's contents for `token` of `account`, whose scheme is `scheme`.
    pub fn render(&self, account: &str, token: &Token, scheme: Option<&str>) -> Zeroizing<Vec<u8>> {
        let expires_at = format!("{:.0}", token.expires_at);
        let expires_in = token.lifetime().as_secs().to_string();
        let value = |field: Field| -> &[u8] {
            match field {
                Field::Token => token.expose().as_bytes(),
                Field::ExpiresAt => expires_at.as_bytes(),
                Field::ExpiresIn => expires_in.as_bytes(),
                Field::Account => account.as_bytes(),
                Field::Type => scheme.unwrap_or("").as_bytes(),
            }
        };
        let bytes = |piece: &Piece| -> usize {
            match piece {
                Piece::Text(text) => text.len(),
                Piece::Field(field) => value(*field).len(),
            }
        };
        let mut out = Zeroizing::new(Vec::with_capacity(self.pieces.iter().map(bytes).sum()));
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Field(field) => out.extend_from_slice(value(*field)),
            }
        }
        out
    }
}

/// At most the first 40 characters of `text`, for a message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use jiff::Timestamp;

    fn token() -> Token {
        let obtained = Timestamp::from_second(1_900_000_000).expect("in range");
        let expires = Timestamp::from_second(1_900_003_600).expect("in range");
        Token::new(Secret::new("tok.EN-1".to_string()), obtained, expires).expect("a valid token")
    }

    #[test]
    fn every_placeholder_and_escaped_braces_render() {
        let template = Template::parse(
            "machine api.example.com password {token}\n{{\"exp\": \"{expires_at}\", \"in\": {expires_in}, \"acct\": \"{account}\", \"type\": \"{type}\"}}\n",
        )
        .expect("valid");
        let text = template.render("papaya", &token(), Some("Bearer"));
        assert_eq!(
            String::from_utf8(text.to_vec()).expect("utf-8"),
            "machine api.example.com password tok.EN-1\n{\"exp\": \"2030-03-17T18:46:40Z\", \"in\": 3600, \"acct\": \"papaya\", \"type\": \"Bearer\"}\n"
        );
        let bare = Template::parse("{type}|{token}").expect("valid");
        assert_eq!(bare.render("o", &token(), None).as_slice(), b"|tok.EN-1");
    }

    #[test]
    fn the_same_token_renders_the_same_bytes() {
        let template = Template::parse("{token} {expires_in} {expires_at}").expect("valid");
        let first = template.render("a", &token(), None);
        let second = template.render("a", &token(), None);
        assert_eq!(first, second);
        assert_eq!(first.capacity(), first.len(), "allocated once, exactly");
    }

    #[test]
    fn bad_templates_are_refused_with_what_is_wrong() {
        for (text, expected) in [
            ("{token} {expiry}", "unknown placeholder `{expiry}`"),
            ("{token} {", "an unclosed `{`"),
            ("{token} }", "a lone `}`"),
            ("Bearer {account}", "has no `{token}`"),
            ("", "has no `{token}`"),
            ("{{token}}", "has no `{token}`"),
        ] {
            let error = Template::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let error = Template::parse("{nope}").expect_err("unknown");
        assert!(
            error.contains("{token}, {expires_at}, {expires_in}, {account}, {type}"),
            "{error}"
        );
    }
}
