//! The application layer: what a user asks plip for, decided once for every face.
//!
//! The command line (`cli/`), the Python module (`python/`, through `host.rs`) and
//! `plip serve` translate their inputs into these calls and the results into their
//! outputs. None of them locates the index, resolves or checks the model, parses
//! query terms or assembles a search on its own: **faces translate, `app` decides.**
//!
//! - [`locate`]: the index folder (explicit, or the nearest `.plip` upward) and
//!   the model source (`--model`, else the index's model, else PLIP);
//! - [`model`]: loading a model with a precision choice, and the one model check
//!   against an index;
//! - [`terms`]: a query's terms (words, image files, slide regions, weights);
//! - [`search`]: one search request, run over an index: items, tiles or slides;
//! - [`slides_like`]: a slide (or region) as the query, other slides ranked
//!   ([`slide_names`]: slides named in a user's CSV, found in the index).

pub(crate) mod locate;
pub(crate) mod model;
pub(crate) mod search;
pub(crate) mod slide_names;
pub(crate) mod slides_graph;
pub(crate) mod slides_like;
pub(crate) mod terms;

pub use search::{Found, SearchHit, SearchRequest, SlideSearchHit};
pub use terms::Terms;
