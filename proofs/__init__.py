"""Machine-checked proofs of the claims of Section 5 and Appendix A."""
