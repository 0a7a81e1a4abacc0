//! RFC 8288 `Link` header values: `<https://x/a?page=2>; rel="next", <...>; rel="last"`.

/// The target of the first link in `value` whose `rel` holds `rel` (relation types are
/// compared case-insensitively; `rel="next prev"` holds both). `None` when there is none
/// or the value is malformed.
pub fn find_rel(value: &str, rel: &str) -> Option<String> {
    let mut rest = value.trim_start();
    while let Some(open) = rest.strip_prefix('<') {
        let close = open.find('>')?;
        let target = &open[..close];
        let mut params = &open[close + 1..];
        // the parameters run to the next ',' that is not inside quotes
        let mut end = params.len();
        let mut quoted = false;
        for (i, c) in params.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let (mine, next) = params.split_at(end);
        params = mine;
        let holds = params.split(';').any(|p| {
            let mut kv = p.splitn(2, '=');
            let k = kv.next().unwrap_or_default().trim();
            let v = kv.next().unwrap_or_default().trim().trim_matches('"');
            k.eq_ignore_ascii_case("rel")
                && v.split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
        });
        if holds {
            return Some(target.trim().to_owned());
        }
        rest = next.trim_start_matches(',').trim_start();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_server_and_github_shapes() {
        let v = r#"<http://127.0.0.1:3000/people?_page=1&_limit=2>; rel="first", <http://127.0.0.1:3000/people?_page=2&_limit=2>; rel="next", <http://127.0.0.1:3000/people?_page=5&_limit=2>; rel="last""#;
        assert_eq!(
            find_rel(v, "next").as_deref(),
            Some("http://127.0.0.1:3000/people?_page=2&_limit=2")
        );
        assert!(find_rel(v, "prev").is_none());
        assert_eq!(
            find_rel("<a>; title=\"x, y\"; REL=\"prev Next\"", "next").as_deref(),
            Some("a")
        );
        assert!(find_rel("garbage", "next").is_none());
        assert!(find_rel("<unclosed; rel=next", "next").is_none());
        assert!(find_rel("", "next").is_none());
    }
}
