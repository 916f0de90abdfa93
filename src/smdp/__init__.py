"""smdp: reference implementation of the Simple Mail Delivery Protocol.

Layout (find any rule of the paper from here):

- ``smdp.protocol``  sans-IO codecs and session state tables of both ports
                     (Table 4: peer port, Table 5: user port). No sockets.
- ``smdp.core``      the domain: addresses, envelopes, decisions (Tables 1, 2),
                     lists (Table 3), quality (section 5.3). No wire, no SQL.
- ``smdp.store``     the storage interface and its SQLite backend, with
                     numbered migrations.
- ``smdp.server``    thin asyncio adapters: peer server, user server, outbound
                     delivery worker, discovery.
- ``smdp.client``    the user-port client used by the ``smdp`` command.
"""

__version__ = "0.1.0"
