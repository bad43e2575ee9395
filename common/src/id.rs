//! Id newtypes. Never pass a bare `u64` around.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Zero-padded so that lexical order equals numeric order in key space.
            pub fn key(self) -> String {
                format!("{:020}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// Owner of buckets. JCS has no user management yet; the API defaults to user 1.
    UserId
);
id_type!(BucketId);
id_type!(PackageId);
id_type!(ObjectId);
id_type!(AgentId);
id_type!(
    /// A user space: a storage location served by an agent.
    SpaceId
);
id_type!(UploadId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_numeric_order() {
        let mut ids = [9u64, 10, 1, 100, u64::MAX, 0];
        let mut keys: Vec<String> = ids.iter().map(|i| ObjectId(*i).key()).collect();
        keys.sort();
        ids.sort();
        let back: Vec<u64> = keys.iter().map(|k| k.parse().unwrap()).collect();
        assert_eq!(back, ids);
    }
}
