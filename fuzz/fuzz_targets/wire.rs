//! Any bytes as the JSON bodies the server and the client parse: enrollment, push, pull, errors.
//! What deserializes must serialize, and deserialize again to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tejido_core::sync::wire::{
    EnrollRequest, EnrollResponse, ErrorBody, PullResponse, PushRequest, PushResponse,
};
use tejido_core::Change;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let Ok(first) = serde_json::from_slice::<T>(bytes) else { return };
    let text = serde_json::to_vec(&first).expect("a deserialized wire value serializes");
    let second: T = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => panic!("{} serialized as JSON that does not parse back: {e}", std::any::type_name::<T>()),
    };
    assert_eq!(first, second, "{} changed in a round trip", std::any::type_name::<T>());
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<PushRequest>(bytes);
    round_trip::<PullResponse>(bytes);
    round_trip::<EnrollRequest>(bytes);
    round_trip::<EnrollResponse>(bytes);
    round_trip::<PushResponse>(bytes);
    round_trip::<ErrorBody>(bytes);
    round_trip::<Change>(bytes);
});
