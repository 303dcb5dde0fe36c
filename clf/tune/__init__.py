"""`clf tune`: recipe search on Ray Tune (ASHA), each trial an ordinary clf run (clf/train), local or on a cluster."""
