"""OCR of images and PDFs (Korean + English): engines as models of the runtime, and the OCR job kind."""
