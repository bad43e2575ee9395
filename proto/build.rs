fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .bytes(".jcs.agent.v1.PutShardRequest.data")
        .bytes(".jcs.agent.v1.Chunk.data")
        .bytes(".jcs.agent.v1.SyncWriteRequest.data")
        .bytes(".jcs.agent.v1.PutSmallShardRequest.data")
        .compile_protos(
            &[
                "proto/jcs/common/v1/common.proto",
                "proto/jcs/coordinator/v1/coordinator.proto",
                "proto/jcs/agent/v1/agent.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
