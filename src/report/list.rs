//! Paginated lists (never a watch): `limit=500` pages followed by their `continue` token,
//! one page held at a time. An expired `continue` token (410 Gone) restarts the list from
//! the beginning once; the caller is told to drop what it gathered.

use kube::api::{Api, ListParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Items per page asked for.
pub const PAGE: u32 = 500;

/// What a paginated list hands its caller.
pub enum Step<K> {
    Item(K),
    /// The list starts over (its `continue` token expired): forget the items so far.
    Restart,
    /// A page ended; items seen so far in this attempt.
    PageDone(u64),
}

/// Status code of an API error answer, if the error is one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub fn is_forbidden(e: &kube::Error) -> bool {
    status_code(e) == Some(403)
}

/// List everything `api` holds matching `base`, page by page.
pub async fn list_paged<K>(
    api: &Api<K>,
    base: &ListParams,
    mut on: impl FnMut(Step<K>),
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut restarted = false;
    let mut token: Option<String> = None;
    let mut seen = 0u64;
    loop {
        let mut lp = base.clone().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match api.list(&lp).await {
            Ok(p) => p,
            Err(e) if status_code(&e) == Some(410) && token.is_some() && !restarted => {
                // The snapshot behind the token was compacted away: start again, once.
                restarted = true;
                token = None;
                seen = 0;
                on(Step::Restart);
                continue;
            }
            Err(e) => return Err(e),
        };
        let next = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        for item in page.items {
            seen += 1;
            on(Step::Item(item));
        }
        on(Step::PageDone(seen));
        match next {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}
