"""Hugging Face transformer teachers: loading, students shrunk from their config, text data, export."""
