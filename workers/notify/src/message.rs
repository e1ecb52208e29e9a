//! The `notify.v1` message: protobuf `mq.v1.Notify`, as server-private's
//! `vendor/proto/mq/v1/notify_pb.ts` (generated from Bangumi's proto repository,
//! `mq/v1/notify.proto`) declares it. Its one message is written here with prost's derive, by
//! hand: no `.proto` is vendored and no `protoc` is needed.
//!
//! ```proto
//! syntax = "proto3";
//! package mq.v1;
//! message Notify {
//!   uint32 mid = 1;
//!   uint32 user_id = 2;
//!   uint32 from_user_id = 3;
//!   int32 type = 4;
//!   string title = 5;
//! }
//! ```

use prost::Message as _;

/// `mq.v1.Notify`: someone (`from_user_id`) did something (`type`) about `mid` (a post, a
/// topic, a patch…) that `user_id` is to be told of, under `title`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Notify {
    /// The related id: `chii_notify_field.ntf_rid` and `chii_notify.nt_related_id`.
    #[prost(uint32, tag = "1")]
    pub mid: u32,
    /// Who is notified.
    #[prost(uint32, tag = "2")]
    pub user_id: u32,
    /// Who caused it.
    #[prost(uint32, tag = "3")]
    pub from_user_id: u32,
    /// The notification type (`nt_type`; server-private's `NotifyType`).
    #[prost(int32, tag = "4")]
    pub r#type: i32,
    /// The title of the thing (`ntf_title`).
    #[prost(string, tag = "5")]
    pub title: String,
}

impl Notify {
    /// Decodes a record value.
    ///
    /// # Errors
    /// The bytes are not a `mq.v1.Notify`, saying why.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        Self::decode(value).map_err(|e| format!("the value is not a protobuf mq.v1.Notify: {e}"))
    }

    /// The encoded message (tests, the demo and the bench produce these).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_server_private_sends() {
        // toBinary(NotifySchema, {mid: 1, userId: 900002, fromUserId: 287622, type: 35,
        // title: 'fake title'}) (tests/event/notify.spec.ts), written out by hand.
        let mut bytes = vec![
            0x08, 0x01, 0x10, 0xa2, 0xf7, 0x36, 0x18, 0x86, 0xc7, 0x11, 0x20, 35,
        ];
        bytes.extend([0x2a, 10]);
        bytes.extend(b"fake title");
        let message = Notify::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            message,
            Notify {
                mid: 1,
                user_id: 900_002,
                from_user_id: 287_622,
                r#type: 35,
                title: "fake title".into(),
            }
        );
        assert_eq!(message.to_bytes(), bytes);
    }

    #[test]
    fn other_bytes_are_refused_with_the_reason() {
        let error = Notify::parse(b"{\"mid\":1}").expect_err("JSON is not protobuf");
        assert!(
            error.starts_with("the value is not a protobuf mq.v1.Notify: "),
            "{error}"
        );
        assert!(Notify::parse(&[0x08]).is_err(), "a truncated varint");
    }
}
