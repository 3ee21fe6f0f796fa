//! The one URL redaction of the code base: every URL that reaches a log, an error message or a
//! printed configuration (database URLs, coordinator URLs, presigned artifact URLs) goes through
//! [`redact_url`].
//!
//! Splitting at the first `@` by hand leaked the tail of a password
//! that contains `@`; a URL parser splits userinfo where the database driver does (at the last `@`
//! before the host). Text the parser does not accept, or that would still show a stray `@` after
//! parsing (a password with an unencoded `/`, `?` or `#` makes the parser read part of it as a
//! port, path, query or fragment), is redacted whole after its scheme: fail closed, never echo.

use url::Url;

/// What a secret is replaced by.
const MASK: &str = "***";

/// `text` fit for logs: a userinfo password becomes `***` (the user name stays; a user name
/// without a password, often a token, is masked instead), and a query or fragment becomes `***`
/// (presigned URLs and tokens live there). A URL with nothing to redact is returned unchanged
/// (`sqlite://data/coordinator.db`); text that cannot be redacted safely keeps only its scheme
/// (`postgres://***`), or becomes `***` without one.
pub fn redact_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) if !stray_at(&url) => redact_parsed(text, url),
        _ => fail_closed(text),
    }
}

/// Whether an `@` is left outside the userinfo: the sign of a password cut short by a delimiter.
fn stray_at(url: &Url) -> bool {
    url.path().contains('@')
        || url.query().is_some_and(|q| q.contains('@'))
        || url.fragment().is_some_and(|f| f.contains('@'))
}

fn redact_parsed(text: &str, mut url: Url) -> String {
    let has_user = !url.username().is_empty();
    let has_password = url.password().is_some();
    if !has_user && !has_password && url.query().is_none() && url.fragment().is_none() {
        // Nothing secret: the text as written (re-serialising would normalise it).
        return text.to_owned();
    }
    let masked = if has_password {
        url.set_password(Some(MASK))
    } else if has_user {
        url.set_username(MASK)
    } else {
        Ok(())
    };
    if masked.is_err() {
        return fail_closed(text);
    }
    if url.query().is_some() {
        url.set_query(Some(MASK));
    }
    if url.fragment().is_some() {
        url.set_fragment(Some(MASK));
    }
    url.into()
}

/// Only the scheme of `text` (when it starts with one), everything after it masked.
fn fail_closed(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once(':') else { return MASK.to_owned() };
    let mut chars = scheme.chars();
    let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    match (is_scheme, rest.starts_with("//")) {
        (true, true) => format!("{scheme}://{MASK}"),
        (true, false) => format!("{scheme}:{MASK}"),
        (false, _) => MASK.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redacts `url` and checks that none of `secrets` shows.
    fn hidden(url: &str, secrets: &[&str]) -> String {
        let shown = redact_url(url);
        for secret in secrets {
            assert!(!shown.contains(secret), "{url} shown as {shown} leaks {secret}");
        }
        shown
    }

    #[test]
    fn passwords_with_at_colon_and_percent_never_show() {
        let at = "postgres://postgres:Pw1@LeakedTail99@127.0.0.1:5432/db";
        assert_eq!(
            hidden(at, &["Pw1", "LeakedTail99"]),
            "postgres://postgres:***@127.0.0.1:5432/db"
        );
        assert_eq!(hidden("postgres://u:pa:ss:x@h/db", &["pa", "ss:x"]), "postgres://u:***@h/db");
        assert_eq!(
            hidden("postgres://u:p%40w%zz@h:1/db", &["p%40", "%zz"]),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(hidden("postgres://u:pw@h/db", &["pw"]), "postgres://u:***@h/db");
    }

    #[test]
    fn passwords_cut_short_by_a_delimiter_fail_closed() {
        // The parser reads "12" as a port and the rest as a path, query or fragment.
        for url in
            ["postgres://u:12/Sec@h/db", "postgres://u:12?Sec@h/db", "postgres://u:12#Sec@h/db"]
        {
            assert_eq!(hidden(url, &["12", "Sec"]), "postgres://***");
        }
        // Not a URL at all: only the scheme survives.
        assert_eq!(hidden("postgres://u:pw@[bad/db", &["pw"]), "postgres://***");
        assert_eq!(hidden("postgres:u:pw@h", &["pw"]), "postgres:***");
        assert_eq!(hidden("//u:pw@host/db", &["pw"]), "***");
        // A user name before the colon looks like a scheme: it is kept, the password is not.
        assert_eq!(hidden("u:pw@host/db", &["pw"]), "u:***");
        assert_eq!(hidden("", &[]), "***");
    }

    #[test]
    fn tokens_queries_and_fragments_are_masked() {
        assert_eq!(
            hidden("wss://u:p@host:1/ws?token=s", &["token=s"]),
            "wss://u:***@host:1/ws?***"
        );
        assert_eq!(hidden("wss://tok3n@host/ws", &["tok3n"]), "wss://***@host/ws");
        assert_eq!(hidden("ws://host?x=1", &["x=1"]), "ws://host/?***");
        assert_eq!(
            hidden("https://a.r2.dev/h/vk.key?X-Amz-Signature=secret#frag", &["secret", "frag"]),
            "https://a.r2.dev/h/vk.key?***#***"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "sqlite://data/coordinator.db",
            "sqlite://Data/Coordinator.db",
            "sqlite:data/c.db",
            "sqlite:///abs/path.db",
            "sqlite::memory:",
            "postgres://127.0.0.1:5432/db",
            "ws://host:1/ws",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
