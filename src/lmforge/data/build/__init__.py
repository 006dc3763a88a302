"""One pipeline for every stage (pipeline.build_examples): records encoded in parallel by the encoder of their
kind, truncated by one policy, cached, laid out (blocks, packing) and reported."""
