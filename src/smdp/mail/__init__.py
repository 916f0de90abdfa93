"""Internet mail as data: addresses (RFC 5321/5322 grammar), message bodies
spooled in bounded memory, and (``smdp.mail.mime``) the MIME reader.

Nothing here knows SMDP's rules or its wire: the codecs (``smdp.protocol``),
the store and the core all build on it, so it imports nothing of ours but
itself.
"""
