from aisle.cli import main

raise SystemExit(main())
