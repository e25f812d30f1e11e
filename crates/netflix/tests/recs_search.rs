//! Search over the generated catalog's index: names, cast and synopsis words,
//! typos, exact above fuzzy, and hostile-looking queries that stay plain text
//! (plus a proptest over the query sanitiser).

use casebook_netflix::catalog::CatalogTitle;
use casebook_netflix::catalog::generate::generate;
use casebook_netflix::recs::search::{
    MAX_QUERY_CHARS, MAX_QUERY_TERMS, MAX_TERM_CHARS, QueryError, SearchIndex, query_terms,
};
use proptest::prelude::*;

fn index_of(titles: &[CatalogTitle]) -> (tempfile::TempDir, SearchIndex) {
    let dir = tempfile::tempdir().unwrap();
    let index = SearchIndex::build(&dir.path().join("index"), titles).unwrap();
    (dir, index)
}

fn search<'a>(
    index: &SearchIndex,
    titles: &'a [CatalogTitle],
    q: &str,
) -> Vec<(&'a CatalogTitle, f32)> {
    let terms = query_terms(q).unwrap();
    index
        .search(&terms, 10)
        .unwrap()
        .into_iter()
        .map(|hit| (&titles[hit.ord], hit.score))
        .collect()
}

#[test]
fn finds_titles_by_name_cast_and_synopsis() {
    let titles = generate(42, 3000);
    let (_dir, index) = index_of(&titles);
    assert_eq!(index.len(), 3000);

    // A unique name: its title comes first.
    for probe in [17, 480, 2999] {
        let name = &titles[probe].name;
        let found = search(&index, &titles, name);
        assert_eq!(&found[0].0.name, name, "searching {name:?}: {found:?}");
    }

    // An actor's full name: the top hits all have them in the cast.
    let actor = titles[5].cast[0].clone();
    let found = search(&index, &titles, &actor);
    let with_actor = titles.iter().filter(|t| t.cast.contains(&actor)).count();
    assert!(with_actor >= 1);
    for (title, _) in found.iter().take(with_actor.min(5)) {
        assert!(title.cast.contains(&actor), "{actor} not in {title:?}");
    }

    // Synopsis words.
    let found = search(&index, &titles, "lighthouse keeper");
    assert_eq!(found.len(), 10);
    assert!(
        found
            .iter()
            .all(|(t, _)| t.synopsis.contains("lighthouse keeper")),
        "{found:?}"
    );

    // Case and accents do not matter.
    let lower = search(&index, &titles, &titles[17].name.to_uppercase());
    assert_eq!(lower[0].0.id, titles[17].id);
}

#[test]
fn tolerates_typos() {
    let titles = generate(42, 3000);
    let (_dir, index) = index_of(&titles);
    for typo in ["strnger", "Strangr", "tsranger"] {
        let found = search(&index, &titles, typo);
        assert!(!found.is_empty(), "{typo}");
        assert!(
            found[0].0.name.contains("Stranger"),
            "{typo}: {:?}",
            found[0].0.name
        );
    }
    // A typo in a two-word query, the last word a prefix being typed.
    let found = search(&index, &titles, "midnigt kingd");
    assert!(
        found[0].0.name.contains("Midnight") && found[0].0.name.contains("Kingdom"),
        "{:?}",
        found[0].0
    );
    // An actor's last name with a typo.
    let found = search(&index, &titles, "lindqvst");
    assert!(found[0].0.cast.iter().any(|c| c.ends_with("Lindqvist")));
}

fn titled(id: &str, name: &str) -> CatalogTitle {
    CatalogTitle {
        id: id.into(),
        name: name.into(),
        year: 2000,
        genres: vec!["Drama".into()],
        cast: vec!["Someone Else".into()],
        synopsis: "Nothing to see here.".into(),
        maturity: "PG".into(),
        duration_min: 90,
        popularity: 0.1,
        playable: false,
    }
}

#[test]
fn exact_matches_rank_above_fuzzy_ones() {
    // Listed fuzzy-first so the order of insertion cannot explain the ranking.
    let titles = vec![
        titled("a", "The Harbour Lights"),
        titled("b", "The Harbr Lights"),
        titled("c", "The Harbor Lights"),
        titled("d", "Unrelated"),
    ];
    let (_dir, index) = index_of(&titles);
    let found = search(&index, &titles, "harbor");
    let ids: Vec<&str> = found.iter().map(|(t, _)| t.id.as_str()).collect();
    assert_eq!(ids[0], "c", "{found:?}");
    assert!(ids.contains(&"a") && ids.contains(&"b"), "{ids:?}");
    assert!(!ids.contains(&"d"));
    assert!(found[0].1 > found[1].1);

    // Short terms are exact (distance 0 under three letters): no fuzzy flood.
    let titles = vec![titled("x", "Up"), titled("y", "Us"), titled("z", "It")];
    let (_dir, index) = index_of(&titles);
    let ids: Vec<String> = search(&index, &titles, "up")
        .into_iter()
        .map(|(t, _)| t.id.clone())
        .collect();
    assert_eq!(ids, ["x"]);
}

#[test]
fn hostile_queries_are_plain_text() {
    let titles = generate(42, 500);
    let (_dir, index) = index_of(&titles);
    for q in [
        "' OR 1=1 --",
        "title:(",
        "*",
        "\"unbalanced",
        "AND OR NOT",
        "title:stranger^10",
        "cast:[a TO z]",
        ")))(((",
        "~2",
        "\\",
        "-harbor +kingdom",
        "%00%27",
        "\u{0}\u{7f}",
        "🎬🍿",
        "<script>alert(1)</script>",
        "'; DROP TABLE titles; --",
    ] {
        let terms = query_terms(q).expect("non-blank text is a query");
        for t in &terms {
            assert!(t.chars().all(char::is_alphanumeric), "{q:?} → {t:?}");
        }
        let hits = index.search(&terms, 10).expect("never an error");
        assert!(hits.len() <= 10);
    }
    // `title:stranger` looks for the words "title" and "stranger", not a field.
    assert_eq!(
        query_terms("title:(stranger").unwrap(),
        ["title", "stranger"]
    );
    assert_eq!(query_terms("*").unwrap(), Vec::<String>::new());
    assert_eq!(query_terms("Amélie AMELIE amelie").unwrap(), ["amelie"]);
    // Folding that makes punctuation keeps the letters and digits only.
    assert_eq!(query_terms("⑴ b").unwrap(), ["1", "b"]);
}

#[test]
fn queries_are_bounded() {
    assert_eq!(query_terms(""), Err(QueryError::Empty));
    assert_eq!(query_terms("  \t "), Err(QueryError::Empty));
    let long = "a".repeat(MAX_QUERY_CHARS + 1);
    assert_eq!(
        query_terms(&long),
        Err(QueryError::TooLong(MAX_QUERY_CHARS + 1))
    );
    assert!(query_terms(&"é".repeat(MAX_QUERY_CHARS)).is_ok());
    let many: Vec<String> = (0..20).map(|i| format!("word{i}")).collect();
    let terms = query_terms(&many.join(" ")).unwrap();
    assert_eq!(terms.len(), MAX_QUERY_TERMS);
    assert_eq!(terms[0], "word0");
    // A token longer than the limit is dropped, as in the documents.
    let huge = "x".repeat(MAX_TERM_CHARS + 1);
    assert_eq!(query_terms(&format!("{huge} ok")).unwrap(), ["ok"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text: no panic; an accepted query has at most MAX_QUERY_TERMS
    /// distinct, non-empty, lowercase alphanumeric terms of bounded length.
    #[test]
    fn the_sanitiser_holds_for_any_text(text in "\\PC{0,260}") {
        match query_terms(&text) {
            Ok(terms) => {
                prop_assert!(terms.len() <= MAX_QUERY_TERMS);
                let distinct: std::collections::HashSet<_> = terms.iter().collect();
                prop_assert_eq!(distinct.len(), terms.len());
                for term in &terms {
                    prop_assert!(!term.is_empty());
                    prop_assert!(term.chars().count() <= MAX_TERM_CHARS);
                    prop_assert!(term.chars().all(char::is_alphanumeric), "{:?}", term);
                    prop_assert_eq!(term.to_lowercase(), term.clone());
                }
            }
            Err(QueryError::Empty) => prop_assert!(text.trim().is_empty()),
            Err(QueryError::TooLong(n)) => prop_assert!(n > MAX_QUERY_CHARS),
        }
    }

    /// Query-syntax-heavy text searches without error.
    #[test]
    fn syntax_soup_searches_cleanly(text in "[a-z:()\\[\\]{}\"'*?~^+\\-!&| \\\\/]{1,80}") {
        thread_local! {
            static INDEX: (tempfile::TempDir, SearchIndex) = {
                let titles = generate(1, 200);
                let dir = tempfile::tempdir().unwrap();
                let index = SearchIndex::build(&dir.path().join("i"), &titles).unwrap();
                (dir, index)
            };
        }
        if let Ok(terms) = query_terms(&text) {
            INDEX.with(|(_, index)| {
                let hits = index.search(&terms, 5).unwrap();
                assert!(hits.len() <= 5);
                assert!(hits.iter().all(|h| h.ord < 200 && h.score.is_finite()));
            });
        }
    }
}
