"""GGUF files for llama.cpp: written through its own converter (write.py), the template read back and checked."""
