//! The view of a stored message tuple ([`TupleRef`]): its fields read in place,
//! its client form (the first six fields), the index cursor that yields it, and
//! the store's single-row look-ups.

use std::ffi::c_char;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use tarantool::ffi::tarantool as ffi;
use tarantool::tuple::Tuple;
use uuid::Uuid;

use super::schema::check;
use super::{corrupt, Store, CLIENT_FIELDS, FIELD_BUCKET, FIELD_ID, PRIMARY, SPACE};
use crate::error::{Error, Result};
use crate::msgpack::{Reader, Write};

/// Tarantool iterator types (box_index_iterator).
#[derive(Clone, Copy)]
#[repr(i32)]
pub enum Iter {
    /// Equal keys, ascending.
    Eq = 0,
    /// Equal keys, descending.
    Req = 1,
    /// Keys below, descending.
    Lt = 3,
    /// Keys at or below, descending.
    Le = 4,
    /// Keys at or above, ascending (every key, from an empty one).
    Ge = 5,
    /// Keys above, ascending.
    Gt = 6,
}

/// A stored tuple, borrowed for `'a`: from the iterator step or the call that
/// produced it, which does not yield while `'a` lasts (Tarantool keeps a tuple it
/// handed out alive until the fiber yields). Not `Copy`: it cannot outlive its
/// source by being copied out of it.
pub struct TupleRef<'a> {
    tuple: NonNull<ffi::BoxTuple>,
    _source: PhantomData<&'a ffi::BoxTuple>,
}

impl<'a> TupleRef<'a> {
    /// # Safety
    /// `tuple` must stay a live tuple for `'a`: either referenced by what `'a`
    /// borrows, or handed out by Tarantool in a stretch of code that does not yield.
    pub(super) unsafe fn new(tuple: NonNull<ffi::BoxTuple>) -> Self {
        TupleRef {
            tuple,
            _source: PhantomData,
        }
    }

    /// An owned (referenced) tuple, borrowed.
    pub fn of(tuple: &'a Tuple) -> Self {
        // The pointer is never null (the Tuple holds it), and `tuple`'s reference
        // keeps it alive for 'a.
        TupleRef {
            tuple: NonNull::from(tuple_header(tuple)),
            _source: PhantomData,
        }
    }

    pub fn as_ptr(&self) -> *mut ffi::BoxTuple {
        self.tuple.as_ptr()
    }

    /// Where the stored `bucket_id` starts in the tuple's msgpack; None for a
    /// tuple of six fields or fewer (stored before sharding), which is already
    /// the message as clients see it. (One look-up: Tarantool keeps the offset
    /// of an indexed field, and `bucket_id` is indexed.)
    fn bucket_field(&self) -> Option<NonNull<u8>> {
        // SAFETY: a live tuple; box_tuple_field returns null for a field it lacks.
        let field = unsafe { ffi::box_tuple_field(self.as_ptr(), FIELD_BUCKET) };
        NonNull::new(field.cast_mut().cast::<u8>())
    }

    /// A uuid field, read in place.
    pub(super) fn uuid(&self, fieldno: u32) -> Option<Uuid> {
        // SAFETY: box_tuple_field returns null or a pointer to the field's msgpack
        // inside the tuple. The format makes `fieldno` a uuid, so the 18 bytes read
        // lie within the tuple; they are checked to be a uuid before use.
        let bytes = unsafe {
            let start = ffi::box_tuple_field(self.as_ptr(), fieldno);
            if start.is_null() || ffi::box_tuple_bsize(self.as_ptr()) < UUID_MP_LEN {
                return None;
            }
            std::slice::from_raw_parts(start.cast::<u8>(), UUID_MP_LEN)
        };
        Reader::new(bytes).read().ok()?.as_uuid()
    }

    /// Appends the message as clients see it to `out`: a msgpack array of its
    /// first six fields, without the store's `bucket_id` (a stored tuple of six
    /// fields is copied whole).
    pub fn append_client_to(&self, out: &mut Vec<u8>) -> Result<()> {
        let Some(bucket) = self.bucket_field() else {
            return self.append_to(out);
        };
        // SAFETY: a live tuple; box_tuple_field returns null or a pointer into the
        // tuple's msgpack, where fields lie in order, so the bytes from the start
        // of field 0 to the start of field 6 are exactly fields 0..=5; they are
        // copied before anything can yield.
        let fields = unsafe {
            let first = ffi::box_tuple_field(self.as_ptr(), 0).cast::<u8>();
            let bucket = bucket.as_ptr().cast_const();
            if first.is_null() || bucket < first {
                return Err(corrupt(SPACE));
            }
            let len = usize::try_from(bucket.offset_from(first)).map_err(|_| corrupt(SPACE))?;
            std::slice::from_raw_parts(first, len)
        };
        out.put_array_header(CLIENT_FIELDS);
        out.extend_from_slice(fields);
        Ok(())
    }

    /// The msgpack of fields `0..end`, read in place (not copied): the bytes
    /// from the start of field 0 to the start of field `end`, where fields lie
    /// in order. None when the tuple has no field `end`. Two look-ups, each
    /// one load when both fields are indexed (Tarantool keeps their offsets).
    pub(super) fn fields_before(&self, end: u32) -> Option<&'a [u8]> {
        // SAFETY: a live tuple for 'a; box_tuple_field returns null or a pointer
        // into the tuple's msgpack, so both ends lie in the same allocation and
        // the span between them is whole fields, alive as long as the tuple.
        unsafe {
            let first = ffi::box_tuple_field(self.as_ptr(), 0).cast::<u8>();
            let stop = ffi::box_tuple_field(self.as_ptr(), end).cast::<u8>();
            if first.is_null() || stop.is_null() || stop < first {
                return None;
            }
            let len = usize::try_from(stop.offset_from(first)).ok()?;
            Some(std::slice::from_raw_parts(first, len))
        }
    }

    /// A string field, copied; None if the field is absent or not a string.
    pub(super) fn str_field(&self, fieldno: u32) -> Option<String> {
        // SAFETY: box_tuple_field returns null or a pointer to the field's msgpack
        // inside the tuple, which holds `bsize` bytes in all. The header is read
        // byte by byte, each step checked against what is left of the tuple from
        // the field's start, before the payload is borrowed; it is copied before
        // anything can yield.
        unsafe {
            let start = ffi::box_tuple_field(self.as_ptr(), fieldno).cast::<u8>();
            if start.is_null() {
                return None;
            }
            let size = ffi::box_tuple_bsize(self.as_ptr());
            let marker = *start;
            let (header, len) = match marker {
                0xa0..=0xbf => (1usize, usize::from(marker & 0x1f)),
                0xd9 => (2, usize::from(*start.add(1))),
                0xda => (
                    3,
                    usize::from(u16::from_be_bytes([*start.add(1), *start.add(2)])),
                ),
                0xdb => {
                    let b = std::slice::from_raw_parts(start.add(1), 4);
                    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    (5, usize::try_from(n).ok()?)
                }
                _ => return None,
            };
            if header.checked_add(len)? > size {
                return None;
            }
            let bytes = std::slice::from_raw_parts(start.add(header), len);
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
    }

    /// Copies the tuple's msgpack to the end of `out`.
    pub(super) fn append_to(&self, out: &mut Vec<u8>) -> Result<()> {
        // SAFETY: a live tuple; the copy goes into spare capacity reserved for it,
        // and the length is only extended by what box_tuple_to_buf wrote.
        unsafe {
            let size = ffi::box_tuple_bsize(self.as_ptr());
            out.reserve(size);
            let dst = out.as_mut_ptr().add(out.len()).cast::<c_char>();
            let written = ffi::box_tuple_to_buf(self.as_ptr(), dst, size);
            let written = usize::try_from(written).map_err(|_| Error::last_box_error())?;
            out.set_len(out.len() + written.min(size));
        }
        Ok(())
    }

    /// The message as clients see it, as a tuple: a stored tuple of six fields
    /// is itself; otherwise a new tuple (not stored) of its first six fields,
    /// built in `scratch`, alive until the next tuple is made: the borrow of
    /// `scratch` says so. (A tuple, not raw msgpack: Tarantool 2.6 cannot hand
    /// more than a few dozen msgpack results of a C procedure to a Lua caller, but
    /// any number of tuples.)
    pub fn client_form<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Result<TupleRef<'s>> {
        if self.bucket_field().is_none() {
            // SAFETY: the same tuple, for a shorter lifetime.
            return Ok(unsafe { TupleRef::new(self.tuple) });
        }
        scratch.clear();
        self.append_client_to(scratch)?;
        let range = scratch.as_ptr_range();
        // SAFETY: `scratch` holds one msgpack array; Tarantool copies it into a new
        // tuple, referenced until the next tuple is made (box_tuple_new's
        // contract), which needs `scratch` again, so not while 's lasts.
        let made = unsafe {
            ffi::box_tuple_new(
                ffi::box_tuple_format_default(),
                range.start.cast(),
                range.end.cast(),
            )
        };
        let made = NonNull::new(made).ok_or_else(Error::last_box_error)?;
        // SAFETY: see above.
        Ok(unsafe { TupleRef::new(made) })
    }
}

/// The box tuple an owned [`Tuple`] references.
fn tuple_header(tuple: &Tuple) -> &ffi::BoxTuple {
    // SAFETY: a Tuple always holds a live, referenced, non-null tuple.
    unsafe { &*tuple.as_ptr() }
}

/// Owns a box iterator and frees it on every path out.
pub(super) struct IndexCursor<'k>(NonNull<ffi::BoxIterator>, PhantomData<&'k [u8]>);

impl Drop for IndexCursor<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from box_index_iterator and is freed once.
        unsafe { ffi::box_iterator_free(self.0.as_ptr()) }
    }
}

impl<'k> IndexCursor<'k> {
    /// A cursor over `index` of `space` from `key` in direction `iter`; None when
    /// there is nothing to walk (Tarantool gave no iterator and set no error).
    /// Tarantool keeps a pointer to `key`, not a copy: the key must outlive the
    /// cursor (the borrow says so).
    pub(super) fn open(space: u32, index: u32, iter: Iter, key: &'k [u8]) -> Result<Option<Self>> {
        let range = key.as_ptr_range();
        // SAFETY: a valid key; the iterator is freed by the cursor's Drop.
        let it = unsafe {
            ffi::box_index_iterator(
                space,
                index,
                iter as i32,
                range.start.cast(),
                range.end.cast(),
            )
        };
        match NonNull::new(it) {
            Some(it) => Ok(Some(IndexCursor(it, PhantomData))),
            None => check(-1).map(|()| None),
        }
    }

    /// The next tuple, valid until the cursor moves again.
    pub(super) fn advance(&mut self) -> Result<Option<TupleRef<'_>>> {
        let mut tuple = ptr::null_mut();
        // SAFETY: a live iterator and a valid out-pointer.
        if unsafe { ffi::box_iterator_next(self.0.as_ptr(), &mut tuple) } < 0 {
            return Err(Error::last_box_error());
        }
        // SAFETY: the iterator's current tuple stays alive while the iterator
        // is borrowed (it keeps its own reference until it moves).
        Ok(NonNull::new(tuple).map(|t| unsafe { TupleRef::new(t) }))
    }
}

/// Length of a msgpack uuid: the fixext16 marker, the type, 16 bytes.
const UUID_MP_LEN: usize = 18;

impl Store {
    /// The greatest message id stored, if any.
    pub fn max_id(&self) -> Result<Option<Uuid>> {
        let key = [0x90u8];
        let mut tuple = ptr::null_mut();
        // SAFETY: a valid empty-array key and out-pointer.
        check(unsafe {
            ffi::box_index_max(
                self.space,
                PRIMARY,
                key.as_ptr().cast(),
                key.as_ptr_range().end.cast(),
                &mut tuple,
            )
        })?;
        // SAFETY: the greatest tuple, read before anything can yield.
        Ok(NonNull::new(tuple).and_then(|t| unsafe { TupleRef::new(t) }.uuid(FIELD_ID)))
    }

    /// The tuple of `key` in `space`'s primary index, referenced (it stays valid
    /// across a yield, such as a commit).
    pub(super) fn get_tuple(space: u32, key: &[u8]) -> Result<Option<Tuple>> {
        let range = key.as_ptr_range();
        let mut tuple = ptr::null_mut();
        // SAFETY: a valid key and out-pointer.
        check(unsafe {
            ffi::box_index_get(
                space,
                PRIMARY,
                range.start.cast(),
                range.end.cast(),
                &mut tuple,
            )
        })?;
        Ok(Tuple::try_from_ptr(tuple))
    }
}
