//! The generated catalog: plausible titles from word lists, drawn with the kit's
//! SplitMix64 from a seed, so one seed is one catalog on every machine and release
//! of these lists.
//!
//! Guaranteed: `generate(seed, n)` is a pure function (same input, same titles, same
//! order); ids are `t00000`…, unique; names are unique (a repeat gets a numeral);
//! every title has 1–3 genres from [`GENRES`], 3–5 cast members drawn Zipf-wise
//! from a fixed pool (so actors recur across titles, as in a real catalog), a
//! year, a maturity rating, a duration and a popularity prior — a Zipf law over a
//! random permutation of ranks, summing to 1 over the generated titles.
//!
//! Not guaranteed: that a name or synopsis reads well; stability across changes
//! to the word lists below.

use casebook_kit::sampling::{Rng, Zipf};

use super::CatalogTitle;

/// Every genre a title may have.
pub const GENRES: &[&str] = &[
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "Horror",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Maturity ratings, mildest first.
pub const MATURITY: &[&str] = &["TV-Y", "TV-G", "PG", "PG-13", "TV-14", "R", "TV-MA"];

// No word here is within two edits of another's start ("Stranger" has no
// "Stronger" beside it), so a typo finds one word, not two.
const ADJECTIVES: &[&str] = &[
    "Stranger",
    "Silent",
    "Broken",
    "Hidden",
    "Crimson",
    "Last",
    "Golden",
    "Frozen",
    "Midnight",
    "Wild",
    "Lost",
    "Burning",
    "Hollow",
    "Savage",
    "Electric",
    "Forgotten",
    "Northern",
    "Iron",
    "Velvet",
    "Scarlet",
    "Endless",
    "Secret",
    "Restless",
    "Distant",
    "Glass",
    "Paper",
    "Wicked",
    "Gentle",
    "Bitter",
    "Neon",
    "Rogue",
    "Sacred",
    "Twisted",
    "Luminous",
    "Feral",
    "Quiet",
];

const NOUNS: &[&str] = &[
    "Things", "Harbor", "Kingdom", "Signal", "Empire", "Garden", "Witness", "Horizon", "Voyage",
    "Frontier", "Mirror", "River", "Crown", "Station", "Shadow", "Tide", "Protocol", "Orchard",
    "Heist", "Dynasty", "Letters", "Lanterns", "Machine", "Season", "Archive", "Island", "Circuit",
    "Covenant", "Summit", "Orbit", "Alibi", "Ledger", "Parade", "Cartel", "Requiem", "Compass",
];

const PLACES: &[&str] = &[
    "Avalon",
    "Brooklyn",
    "Marrakesh",
    "Oslo",
    "Lisbon",
    "Kyoto",
    "Havana",
    "Saturn",
    "Patagonia",
    "Bombay",
    "Reykjavik",
    "Nairobi",
    "Tangier",
    "Valparaiso",
];

const FIRST_NAMES: &[&str] = &[
    "Ava", "Liam", "Noor", "Mateo", "Ines", "Kenji", "Zara", "Oscar", "Priya", "Tomas", "Lena",
    "Dmitri", "Amara", "Hugo", "Sofia", "Rafael", "Yuki", "Elena", "Malik", "Greta", "Jonah",
    "Aisha", "Felix", "Maya", "Idris", "Clara", "Nikolai", "Leila", "Bruno", "Hana",
];

const LAST_NAMES: &[&str] = &[
    "Moreno",
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Haddad",
    "Kowalski",
    "Brennan",
    "Castillo",
    "Nakamura",
    "Adeyemi",
    "Fischer",
    "Rossi",
    "Petrov",
    "Mensah",
    "Dubois",
    "Almeida",
    "Varga",
    "Sato",
    "Novak",
    "Quinn",
    "Ferreira",
    "Holm",
    "Abara",
    "Lachance",
    "Marchetti",
    "Iqbal",
    "Ostrowski",
    "Bellamy",
    "Ruiz",
    "Whitlock",
];

const ROLES: &[&str] = &[
    "retired detective",
    "young chemist",
    "disgraced pilot",
    "small-town baker",
    "reluctant heir",
    "grieving astronaut",
    "street magician",
    "forensic accountant",
    "runaway princess",
    "jazz pianist",
    "veteran smuggler",
    "rookie journalist",
    "lighthouse keeper",
    "exiled chef",
];

const VERBS: &[&str] = &[
    "uncovers",
    "must protect",
    "races to stop",
    "falls for",
    "hunts down",
    "inherits",
    "is framed for",
    "tries to forget",
    "sets out to steal",
    "stumbles upon",
];

const OBJECTS: &[&str] = &[
    "a conspiracy that reaches the top",
    "a stolen painting",
    "a missing sister",
    "an ancient map",
    "a rival crew",
    "a haunted vineyard",
    "a machine that dreams",
    "a fortune in cursed gold",
    "a coded radio broadcast",
    "the last dragon egg",
    "a secret recipe",
    "a runaway train",
];

const SETTINGS: &[&str] = &[
    "in 1970s Lisbon",
    "on a failing space station",
    "across the Sahara",
    "in a sleepy coastal town",
    "beneath a frozen lake",
    "during a city-wide blackout",
    "at a boarding school in the Alps",
    "on the eve of a revolution",
    "inside a floating casino",
    "in the shadow of a volcano",
];

const CODAS: &[&str] = &[
    "Nothing is what it seems.",
    "Old loyalties are tested.",
    "The clock is ticking.",
    "Family secrets surface.",
    "Love gets in the way.",
    "Every choice has a price.",
    "The truth is stranger than fiction.",
    "Help comes from an unlikely ally.",
];

/// The size of the pool actors are drawn from.
const CAST_POOL: usize = 600;

/// The newest year a title may have.
pub const NEWEST_YEAR: u16 = 2026;

/// A generated id: `t` and five digits.
pub fn generated_id(index: usize) -> String {
    format!("t{index:05}")
}

/// The catalog `seed` generates: `count` titles, ids `t00000`… in order.
pub fn generate(seed: u64, count: usize) -> Vec<CatalogTitle> {
    let mut rng = Rng::new(seed);
    let cast_pool = actors(&mut rng);
    // Leading actors are in many titles, most in few.
    let cast_law = Zipf::new(CAST_POOL, 0.9, 5.0).expect("a valid law");
    let popularity = popularity_priors(&mut rng, count);
    let mut seen = std::collections::HashMap::<String, u32>::new();
    (0..count)
        .map(|index| {
            // A generator per title: title k is the same whatever the count.
            let mut rng = Rng::new(seed ^ fnv1a(&(index as u64).to_le_bytes()));
            let mut title = describe(&mut rng, &cast_pool, &cast_law);
            let repeats = seen.entry(title.name.clone()).or_default();
            *repeats += 1;
            if *repeats > 1 {
                title.name = format!("{} {}", title.name, repeats);
            }
            title.id = generated_id(index);
            title.popularity = popularity[index];
            title
        })
        .collect()
}

/// Metadata for a title the pipeline ingested (genres, cast, year, synopsis
/// derived from its id, so the same id always gets the same), with its own name.
pub fn describe_ingested(seed: u64, id: &str, name: &str) -> CatalogTitle {
    let mut pool_rng = Rng::new(seed);
    let cast_pool = actors(&mut pool_rng);
    let cast_law = Zipf::new(CAST_POOL, 0.9, 5.0).expect("a valid law");
    let mut rng = Rng::new(seed ^ fnv1a(id.as_bytes()));
    let mut title = describe(&mut rng, &cast_pool, &cast_law);
    title.id = id.to_owned();
    title.name = name.to_owned();
    title
}

/// FNV-1a, 64 bits: a stable hash (std's is randomised per process).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn pick<'a>(rng: &mut Rng, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len() as u64) as usize]
}

fn actors(rng: &mut Rng) -> Vec<String> {
    let mut pool = Vec::with_capacity(CAST_POOL);
    let mut seen = std::collections::HashSet::new();
    while pool.len() < CAST_POOL {
        let name = format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES));
        // 900 combinations for 600 names: the draw ends, a little slower at the tail.
        if seen.insert(name.clone()) {
            pool.push(name);
        }
    }
    pool
}

fn popularity_priors(rng: &mut Rng, count: usize) -> Vec<f64> {
    if count == 0 {
        return Vec::new();
    }
    // A Fisher–Yates permutation of ranks: popularity is not the id order.
    let mut ranks: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ranks.swap(i, j);
    }
    let law = Zipf::new(count, 1.0, 2.0).expect("count is bounded by the config");
    ranks.into_iter().map(|rank| law.p(rank)).collect()
}

fn describe(rng: &mut Rng, cast_pool: &[String], cast_law: &Zipf) -> CatalogTitle {
    let name = match rng.below(5) {
        0 => format!("The {} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS)),
        1 => format!("{} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS)),
        2 => format!("The {} of {}", pick(rng, NOUNS), pick(rng, PLACES)),
        3 => format!("{} {}", pick(rng, PLACES), pick(rng, NOUNS)),
        _ => format!("{} in {}", pick(rng, ADJECTIVES), pick(rng, PLACES)),
    };
    let genre_count = 1 + rng.below(3) as usize;
    let mut genres: Vec<String> = Vec::with_capacity(genre_count);
    while genres.len() < genre_count {
        let genre = pick(rng, GENRES);
        if !genres.iter().any(|g| g == genre) {
            genres.push(genre.to_owned());
        }
    }
    let cast_count = 3 + rng.below(3) as usize;
    let mut cast: Vec<String> = Vec::with_capacity(cast_count);
    while cast.len() < cast_count {
        let actor = &cast_pool[cast_law.sample(rng)];
        if !cast.contains(actor) {
            cast.push(actor.clone());
        }
    }
    let lead = cast[0].split(' ').next().unwrap_or("Someone").to_owned();
    let role = pick(rng, ROLES);
    let article = if role.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "An"
    } else {
        "A"
    };
    let synopsis = format!(
        "{article} {role} named {lead} {} {} {}. {}",
        pick(rng, VERBS),
        pick(rng, OBJECTS),
        pick(rng, SETTINGS),
        pick(rng, CODAS),
    );
    // Newer titles are more common: the square of a uniform leans towards 0.
    let age = (rng.unit().powi(2) * 75.0) as u16;
    let maturity = MATURITY[rng.below(MATURITY.len() as u64) as usize].to_owned();
    let duration_min = if rng.chance(0.35) {
        // An episode.
        22 + rng.below(40) as u32
    } else {
        80 + rng.below(100) as u32
    };
    CatalogTitle {
        id: String::new(),
        name,
        year: NEWEST_YEAR - age,
        genres,
        cast,
        synopsis,
        maturity,
        duration_min,
        popularity: 0.0,
        playable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_one_catalog() {
        assert_eq!(generate(7, 200), generate(7, 200));
        assert_ne!(generate(7, 200), generate(8, 200));
        // A longer catalog starts with the same titles' metadata except popularity.
        let short = generate(7, 10);
        let long = generate(7, 20);
        for (a, b) in short.iter().zip(&long) {
            assert_eq!((&a.id, &a.name, &a.cast), (&b.id, &b.name, &b.cast));
        }
    }

    #[test]
    fn priors_sum_to_one_and_names_are_unique() {
        let titles = generate(42, 3000);
        let total: f64 = titles.iter().map(|t| t.popularity).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let names: std::collections::HashSet<_> = titles.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), titles.len());
    }

    #[test]
    fn ingested_titles_are_described_the_same_way_each_time() {
        let a = describe_ingested(42, "sample", "Sample");
        assert_eq!(a, describe_ingested(42, "sample", "Sample"));
        assert_eq!(a.name, "Sample");
        assert!(!a.genres.is_empty() && a.cast.len() >= 3);
    }
}
