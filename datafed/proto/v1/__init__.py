"""Generated wire contract (package datafed.proto.v1); see protos/."""
