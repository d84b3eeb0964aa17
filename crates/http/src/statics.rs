//! The web page, embedded at build time and served by exact path from a
//! fixed table: there is no file system access at run time, so no path can
//! leave `static/`.

pub(crate) struct StaticFile {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const PAGE: StaticFile = StaticFile {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../../static/index.html"),
};

/// Every file served, by its exact path.
pub(crate) static FILES: [(&str, StaticFile); 5] = [
    ("/", PAGE),
    ("/index.html", PAGE),
    (
        "/style.css",
        StaticFile {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../../../static/style.css"),
        },
    ),
    (
        "/app.js",
        StaticFile {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../../static/app.js"),
        },
    ),
    (
        "/favicon.svg",
        StaticFile {
            content_type: "image/svg+xml",
            body: include_bytes!("../../../static/favicon.svg"),
        },
    ),
];

pub(crate) fn lookup(path: &str) -> Option<&'static StaticFile> {
    FILES
        .iter()
        .find_map(|(served, file)| (*served == path).then_some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> &'static str {
        std::str::from_utf8(lookup("/").expect("the page").body).expect("UTF-8")
    }

    #[test]
    fn every_file_the_page_loads_is_in_the_table() {
        let page = page();
        let mut found = 0;
        for attr in ["href=\"", "src=\""] {
            for (at, _) in page.match_indices(attr) {
                let rest = &page[at + attr.len()..];
                let target = &rest[..rest.find('"').expect("a closing quote")];
                if target.starts_with('#') {
                    continue;
                }
                let path = target.split('?').next().unwrap_or(target);
                assert!(lookup(path).is_some(), "{target} is not served");
                found += 1;
            }
        }
        assert!(found >= 3, "the page links its stylesheet, script and icon");
    }

    #[test]
    fn the_page_has_nothing_inline_the_content_security_policy_would_block() {
        let page = page().to_ascii_lowercase();
        assert!(!page.contains(" style="), "an inline style attribute");
        assert!(!page.contains("<style"), "an inline stylesheet");
        for (at, _) in page.match_indices("<script") {
            let tag = &page[at..at + page[at..].find('>').expect("a closing >")];
            assert!(tag.contains(" src="), "an inline script: {tag}");
        }
        for handler in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onerror=",
            " oninput=",
        ] {
            assert!(!page.contains(handler), "an inline handler {handler}");
        }
    }
}
