from server.score.cli import main

raise SystemExit(main())
