//! The payload codec: serde to compact bytes and back.
//!
//! The codec is [postcard](https://docs.rs/postcard) (varint integers, no field names, no
//! padding), chosen by measurement against bincode 2, MessagePack and JSON on a realistic tick
//! (`benches/codec.rs`; the numbers and the reasoning are in `docs/protocol.md`, "Codec
//! choice"). It is not self-describing: both sides must agree on the message types, which the
//! protocol version guarantees.
//!
//! Decoding ignores bytes after the end of the value, so a newer MINOR version may append fields
//! at the very end of a top-level body (see the versioning rules in `docs/protocol.md`).
//!
//! Only these functions name the codec; everything else in the crate goes through them, so the
//! codec never shows in the public API or in [`Error`].

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// Encodes `value` into a new buffer.
///
/// ```
/// use stallscope_wire::{codec, Drops};
/// let bytes = codec::encode(&Drops { samples: 3, ..Drops::default() }).unwrap();
/// assert_eq!(codec::decode::<Drops>(&bytes).unwrap().samples, 3);
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(payload_error)
}

/// Appends the encoding of `value` to `out` (on error `out` is left empty).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).map_err(payload_error)?;
    Ok(())
}

/// Decodes a `T` from the start of `bytes`; trailing bytes are ignored.
///
/// Never panics: malformed input gives [`Error::Payload`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(payload_error)
}

/// Decodes a `T` from the start of `bytes` and returns the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8])> {
    postcard::take_from_bytes(bytes).map_err(payload_error)
}

fn payload_error(e: postcard::Error) -> Error {
    Error::Payload { reason: e.to_string() }
}
