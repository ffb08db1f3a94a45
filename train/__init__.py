"""Training and evaluation of UniMSE on MELD, IEMOCAP and CMU-MOSI."""
