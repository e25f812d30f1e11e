//! The search index: the catalog in tantivy, on disk, and the queries over it —
//! typo-tolerant full text and "more like this".
//!
//! **Fields**: `title` (boost [`TITLE_BOOST`]), `cast` ([`CAST_BOOST`]),
//! `genres` ([`GENRE_BOOST`]), `synopsis` (1), all through one analyzer
//! ([`ANALYZER`]: split on anything not a letter or digit, fold accents to
//! ASCII, lowercase, keep the letters and digits of what folding made (`⑴`
//! folds to `(1)`, kept as `1`), drop tokens over [`MAX_TERM_CHARS`]
//! characters — measured last, as folding and lowercasing can lengthen a
//! token); `ord`, a fast
//! field, is the title's position in the catalog the index was built from;
//! `cast_exact` and `genre_exact` hold whole names, lowercased, for similarity.
//!
//! **Queries are plain text**: [`query_terms`] runs the user's text through the
//! same analyzer and nothing else — tantivy's query-parser syntax (`field:`,
//! `*`, `"`, `(`, `AND`, `-`) is never interpreted, so `title:(` or `' OR 1=1 --`
//! is a few words to look for, never an error. Each term `t` (at most
//! [`MAX_QUERY_TERMS`]; the rest are ignored) becomes, on every field:
//! an exact term query boosted ×[`EXACT_BOOST`], and a fuzzy one — Levenshtein
//! distance 0 under 3 characters, 1 up to 5, 2 from 6 (a transposition costs 1) —
//! which for the last term is a prefix query (search as you type). Exact matches
//! score BM25 × boost on top of the fuzzy match's constant, so a title that has
//! the word outranks one that has a word near it. Terms are OR-ed: more terms
//! matched, higher score; two or more terms also match as a phrase in `title`
//! and `cast` (a whole name, in order, outranks its words apart).
//!
//! Not guaranteed: relevance beyond that (no stemming, no stop words, no
//! phrase proximity); scores are comparable within one answer only.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, MoreLikeThisQuery, Occur, PhraseQuery, Query,
    TermQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, OwnedValue, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
    Token, TokenFilter, TokenStream, Tokenizer,
};
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::CatalogTitle;

/// The analyzer's name in the index's tokenizer manager.
pub const ANALYZER: &str = "casebook_text";
/// The longest query `q` may be, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// How many of a query's terms are searched for.
pub const MAX_QUERY_TERMS: usize = 8;
/// Tokens longer than this are dropped, in documents and queries alike.
pub const MAX_TERM_CHARS: usize = 40;
/// How much a title match weighs against a synopsis match.
pub const TITLE_BOOST: f32 = 3.0;
/// How much a cast match weighs.
pub const CAST_BOOST: f32 = 2.0;
/// How much a genre match weighs.
pub const GENRE_BOOST: f32 = 1.5;
/// How much an exact term outweighs the fuzzy match of the same term.
pub const EXACT_BOOST: f32 = 2.0;

/// The analyzer of whole values (cast names, genres), lowercased.
pub const WHOLE: &str = "casebook_whole";

fn whole_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

/// The analyzer for documents and queries (see the module docs).
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(AsciiFoldingFilter)
        .filter(LowerCaser)
        .filter(AlphanumericOnly)
        // The limit is in bytes; a token of at most MAX_TERM_CHARS bytes has at
        // most as many characters.
        .filter(RemoveLongFilter::limit(MAX_TERM_CHARS + 1))
        .build()
}

/// Keeps a token's letters and digits and drops a token left empty: ASCII
/// folding turns some letters and digits into punctuation (`⑴` → `(1)`,
/// `⒈` → `1.`), which the tokenizer's split had let through.
#[derive(Clone, Copy)]
struct AlphanumericOnly;

impl TokenFilter for AlphanumericOnly {
    type Tokenizer<T: Tokenizer> = AlphanumericOnlyTokenizer<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> AlphanumericOnlyTokenizer<T> {
        AlphanumericOnlyTokenizer(inner)
    }
}

#[derive(Clone)]
struct AlphanumericOnlyTokenizer<T>(T);

impl<T: Tokenizer> Tokenizer for AlphanumericOnlyTokenizer<T> {
    type TokenStream<'a> = AlphanumericOnlyStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        AlphanumericOnlyStream(self.0.token_stream(text))
    }
}

struct AlphanumericOnlyStream<T>(T);

impl<T: TokenStream> TokenStream for AlphanumericOnlyStream<T> {
    fn advance(&mut self) -> bool {
        while self.0.advance() {
            let text = &mut self.0.token_mut().text;
            if !text.chars().all(char::is_alphanumeric) {
                text.retain(char::is_alphanumeric);
            }
            if !text.is_empty() {
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

/// Why a query cannot be searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is empty")]
    Empty,
    #[error("the query is {0} characters; at most {MAX_QUERY_CHARS}")]
    TooLong(usize),
}

/// The user's text as the terms searched for: the analyzer's tokens, the first
/// [`MAX_QUERY_TERMS`], duplicates dropped. Text with no letter or digit gives
/// no term (and no result); blank text and text over [`MAX_QUERY_CHARS`] are
/// refused.
pub fn query_terms(text: &str) -> Result<Vec<String>, QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::Empty);
    }
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(QueryError::TooLong(chars));
    }
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut terms: Vec<String> = Vec::new();
    while terms.len() < MAX_QUERY_TERMS && stream.advance() {
        let token = &stream.token().text;
        if !token.is_empty() && !terms.contains(token) {
            terms.push(token.clone());
        }
    }
    Ok(terms)
}

/// The Levenshtein distance a term of `chars` characters tolerates.
pub fn fuzzy_distance(chars: usize) -> u8 {
    match chars {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// One hit: the title's position in the indexed catalog and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub ord: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    title: Field,
    cast: Field,
    synopsis: Field,
    genres: Field,
    /// Whole cast names and genres, for "shares one with": a first name in
    /// common is not a cast member in common.
    cast_exact: Field,
    genre_exact: Field,
    ord: Field,
}

/// A built index over one version of the catalog. Searches are synchronous
/// (microseconds to a few milliseconds); share it behind an `Arc`.
pub struct SearchIndex {
    reader: IndexReader,
    fields: Fields,
    docs: usize,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("docs", &self.docs)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Indexes `titles` into `dir` (created; must be empty or absent), in one
    /// segment, and opens it for search.
    pub fn build(dir: &Path, titles: &[CatalogTitle]) -> tantivy::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let whole = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WHOLE)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            title: schema.add_text_field("title", text.clone()),
            cast: schema.add_text_field("cast", text.clone()),
            synopsis: schema.add_text_field("synopsis", text.clone()),
            genres: schema.add_text_field("genres", text),
            cast_exact: schema.add_text_field("cast_exact", whole.clone()),
            genre_exact: schema.add_text_field("genre_exact", whole),
            ord: schema.add_u64_field("ord", FAST),
        };
        let index = Index::create_in_dir(dir, schema.build())?;
        index.tokenizers().register(ANALYZER, analyzer());
        index.tokenizers().register(WHOLE, whole_analyzer());
        // One thread, the smallest budget: a few thousand titles are a few MB.
        let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, 15_000_000)?;
        for (ord, title) in titles.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_text(fields.title, &title.name);
            for actor in &title.cast {
                doc.add_text(fields.cast, actor);
                doc.add_text(fields.cast_exact, actor);
            }
            doc.add_text(fields.synopsis, &title.synopsis);
            for genre in &title.genres {
                doc.add_text(fields.genres, genre);
                doc.add_text(fields.genre_exact, genre);
            }
            doc.add_u64(fields.ord, ord as u64);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            reader,
            fields,
            docs: titles.len(),
        })
    }

    /// How many titles are indexed.
    pub fn len(&self) -> usize {
        self.docs
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    fn weighted_fields(&self) -> [(Field, f32); 4] {
        [
            (self.fields.title, TITLE_BOOST),
            (self.fields.cast, CAST_BOOST),
            (self.fields.genres, GENRE_BOOST),
            (self.fields.synopsis, 1.0),
        ]
    }

    /// The best `limit` titles for `terms` (from [`query_terms`]), best first.
    pub fn search(&self, terms: &[String], limit: usize) -> tantivy::Result<Vec<Hit>> {
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, text) in terms.iter().enumerate() {
            let last = i + 1 == terms.len();
            let distance = fuzzy_distance(text.chars().count());
            for (field, boost) in self.weighted_fields() {
                let term = Term::from_field_text(field, text);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                        boost * EXACT_BOOST,
                    )),
                ));
                let fuzzy = if last {
                    FuzzyTermQuery::new_prefix(term, distance, true)
                } else if distance > 0 {
                    FuzzyTermQuery::new(term, distance, true)
                } else {
                    continue;
                };
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(fuzzy), boost)),
                ));
            }
        }
        if terms.len() >= 2 {
            // The words together, in order (a whole name), outrank them apart.
            for (field, boost) in [
                (self.fields.title, TITLE_BOOST),
                (self.fields.cast, CAST_BOOST),
            ] {
                let phrase = terms
                    .iter()
                    .map(|t| Term::from_field_text(field, t))
                    .collect();
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(PhraseQuery::new(phrase)),
                        boost * EXACT_BOOST,
                    )),
                ));
            }
        }
        self.top(&BooleanQuery::new(clauses), limit)
    }

    /// Up to `limit` titles like `title`: sharing at least one of its genres or
    /// cast members, ranked by what they share (cast and genres first, then the
    /// synopsis's words, TF-IDF weighted). `title` itself is among them when
    /// indexed: the caller leaves out what it must.
    pub fn more_like(&self, title: &CatalogTitle, limit: usize) -> tantivy::Result<Vec<Hit>> {
        let mut shared: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, values, boost) in [
            (self.fields.genre_exact, &title.genres, GENRE_BOOST),
            (self.fields.cast_exact, &title.cast, CAST_BOOST),
        ] {
            for value in values {
                let term = Term::from_field_text(field, &value.to_lowercase());
                shared.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                        boost,
                    )),
                ));
            }
        }
        if shared.is_empty() {
            return Ok(Vec::new());
        }
        let like = MoreLikeThisQuery::builder()
            .with_min_doc_frequency(1)
            .with_min_term_frequency(1)
            .with_min_word_length(4)
            .with_max_query_terms(12)
            .with_document_fields(vec![(
                self.fields.synopsis,
                vec![OwnedValue::Str(title.synopsis.clone())],
            )]);
        let query = BooleanQuery::new(vec![
            (Occur::Must, Box::new(BooleanQuery::new(shared))),
            (Occur::Should, Box::new(like)),
        ]);
        self.top(&query, limit)
    }

    fn top(&self, query: &dyn Query, limit: usize) -> tantivy::Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let found = searcher.search(query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(found.len());
        for (score, address) in found {
            hits.push(Hit {
                ord: self.ord(&searcher, address)?,
                score,
            });
        }
        Ok(hits)
    }

    fn ord(&self, searcher: &tantivy::Searcher, address: DocAddress) -> tantivy::Result<usize> {
        let column = searcher
            .segment_reader(address.segment_ord)
            .fast_fields()
            .u64("ord")?;
        Ok(column.first(address.doc_id).unwrap_or(u64::MAX) as usize)
    }
}
