"""The inputs seam: what a sample is. `arrays` and `text` load and split data; `array_inputs` and
`text_inputs` are the registered entries (`registry.INPUTS`) the run works through; `base` says
what an entry provides."""
