"""The engine. Imports torch and Pillow, never Qt: testable without a display or a GPU."""
