//! Wire enums ↔ the domain types they carry, written once for every service that sends or
//! reads them.

use ::common::shard_hash::Algorithm;

use crate::common::ShardHash;

impl From<Algorithm> for ShardHash {
    fn from(algorithm: Algorithm) -> ShardHash {
        match algorithm {
            Algorithm::Sha256 => ShardHash::Sha256,
            Algorithm::Blake3 => ShardHash::Blake3,
        }
    }
}

impl From<ShardHash> for Algorithm {
    fn from(hash: ShardHash) -> Algorithm {
        match hash {
            ShardHash::Sha256 => Algorithm::Sha256,
            ShardHash::Blake3 => Algorithm::Blake3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hash_algorithms_round_trip() {
        for algorithm in [Algorithm::Sha256, Algorithm::Blake3] {
            assert_eq!(Algorithm::from(ShardHash::from(algorithm)), algorithm);
        }
        // The wire default (0) is SHA-256, what tickets from before the field meant.
        assert_eq!(ShardHash::default(), ShardHash::from(Algorithm::Sha256));
    }
}
