//! The page walk: up to `limit` messages of one dialog, between two exclusive
//! cursors, in either direction, straight off the `(dialog_id, id)` index.

use uuid::Uuid;

use super::tuple::{IndexCursor, Iter};
use super::{corrupt, key, Store, TupleRef, FIELD_DIALOG, FIELD_ID, SPACE};
use crate::error::Result;

/// What a page holds: the messages of `dialog_id` strictly between `after` and
/// `before`, at most `limit`, oldest first unless `reverse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageQuery {
    pub dialog_id: Uuid,
    pub limit: u32,
    /// Only messages with a greater id.
    pub after: Option<Uuid>,
    /// Only messages with a smaller id.
    pub before: Option<Uuid>,
    /// Newest first.
    pub reverse: bool,
}

impl Store {
    /// Passes to `emit` the page `query` asks for: up to `limit` messages of
    /// its dialog strictly between `after` and `before`, ascending or (with
    /// `reverse`) descending by id. Returns how many it passed.
    pub fn page(
        &self,
        query: &PageQuery,
        mut emit: impl FnMut(&TupleRef<'_>) -> Result<()>,
    ) -> Result<u32> {
        let PageQuery {
            dialog_id,
            limit,
            after,
            before,
            reverse,
        } = *query;
        // Start at the cursor on the side we walk from; stop at the other one.
        let (iter, start, stop) = match (reverse, after, before) {
            (false, Some(a), _) => (Iter::Gt, Some(a), before),
            (false, None, _) => (Iter::Eq, None, before),
            (true, _, Some(b)) => (Iter::Lt, Some(b), after),
            (true, _, None) => (Iter::Req, None, after),
        };
        let start_key = match start {
            Some(s) => key(&[dialog_id, s]),
            None => key(&[dialog_id]),
        };
        let Some(mut it) = IndexCursor::open(self.space, self.by_dialog, iter, &start_key)? else {
            return Ok(0);
        };
        let mut count = 0u32;
        while count < limit {
            let Some(tuple) = it.advance()? else { break };
            // GT and LT run on past the dialog; EQ and REQ never do.
            if matches!(iter, Iter::Gt | Iter::Lt) && tuple.uuid(FIELD_DIALOG) != Some(dialog_id) {
                break;
            }
            if let Some(stop) = stop {
                let id = tuple.uuid(FIELD_ID).ok_or_else(|| corrupt(SPACE))?;
                if (!reverse && id >= stop) || (reverse && id <= stop) {
                    break;
                }
            }
            emit(&tuple)?;
            count += 1;
        }
        Ok(count)
    }
}
